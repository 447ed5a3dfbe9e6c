"""Short names for the generated protobuf modules.

>>> from headwater.shared.pb import registry_pb2
>>> registry_pb2.Model(name="churn").name
'churn'
"""

from headwater.shared.proto.headwater.events.v1 import events_pb2
from headwater.shared.proto.headwater.registry.v1 import registry_pb2, registry_pb2_grpc
from headwater.shared.proto.inference import grpc_predict_v2_pb2 as oip_pb2
from headwater.shared.proto.inference import grpc_predict_v2_pb2_grpc as oip_pb2_grpc

__all__ = [
    "events_pb2",
    "oip_pb2",
    "oip_pb2_grpc",
    "registry_pb2",
    "registry_pb2_grpc",
]
