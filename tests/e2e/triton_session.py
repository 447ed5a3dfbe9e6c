"""A stock ``tritonclient.grpc`` client, run in its own process by the e2e tests.

tritonclient registers its own ``inference`` protos; in the test process they
would clash with headwater's generated copy of the same package, so the stock
client lives here and talks over stdin/stdout, one JSON line per step:

1. wait until the model is ready, predict ROW, print the prediction id, P(True)
   and the live sequence served;
2. read one line (the test has sent the label), then predict ROW until the
   gateway serves a newer live sequence, and print the same fields again.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

ROW = {"x0": 1.0, "x1": 2.0}


def infer(client: triton.InferenceServerClient, model: str) -> dict[str, object]:
    inputs = []
    for name, value in ROW.items():
        tensor = triton.InferInput(name, [1], "FP64")
        tensor.set_data_from_numpy(np.array([value], dtype=np.float64))
        inputs.append(tensor)
    result = client.infer(model, inputs)
    params = result.get_response().parameters
    classes = json.loads(result.get_output("predict_proba").parameters["classes"].string_param)
    proba = result.as_numpy("predict_proba")
    return {
        "prediction_id": params["prediction_ids"].string_param,
        "p_true": float(proba[0][classes.index(True)]) if True in classes else 0.5,
        "live_sequence": params["live_sequence"].int64_param,
        "version": result.get_response().model_version,
    }


def _ready(client: triton.InferenceServerClient, model: str) -> bool:
    """Whether the gateway serves ``model``; NOT_FOUND until its registry events arrive.

    The registry answers the deploy once committed; the gateway hears of the new
    model through the outbox relay and ``registry-events`` a moment later.
    """
    try:
        return bool(client.is_model_ready(model))
    except InferenceServerException as error:
        if error.status() != "StatusCode.NOT_FOUND":
            raise
        return False


def main(url: str, model: str, timeout_s: float) -> int:
    client = triton.InferenceServerClient(url)
    deadline = time.monotonic() + timeout_s
    while not _ready(client, model):
        if time.monotonic() > deadline:
            return 2
        time.sleep(0.2)
    first = infer(client, model)
    print(json.dumps(first), flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + timeout_s
    while True:
        answer = infer(client, model)
        if answer["live_sequence"] > first["live_sequence"]:
            print(json.dumps(answer), flush=True)
            return 0
        if time.monotonic() > deadline:
            return 3
        time.sleep(0.2)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
