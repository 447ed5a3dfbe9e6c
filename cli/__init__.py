"""The headwater admin CLI."""

import os

# grpcio 1.81+ (grpc/grpc#43055): with fork support on, a child forked by
# subprocess.Popen can crash on a closed epoll fd before it execs. The CLI and
# the test fixtures spawn processes while gRPC channels are open; they need no
# fork support (every child execs), so it is turned off before grpc loads.
os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")
