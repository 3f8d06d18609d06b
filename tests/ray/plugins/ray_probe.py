"""A plugin that tells where it runs, echoes uploads, returns results of any size, sleeps on
demand, writes its pid where the test asks (to kill it mid-call) and reports progress.
"""

import hashlib
import logging
import os
import time

from marshmallow import fields, validate

from deepaas_like.progress import report

LOG = logging.getLogger("ray_probe")


def get_predict_args():
    return {
        "data": fields.Raw(metadata={"type": "file"}),
        "seconds": fields.Float(load_default=0.0),
        "size": fields.Int(load_default=0, metadata={"description": "bytes of a binary result (0: JSON)"}),
        "pidfile": fields.Str(load_default=""),
        "log": fields.Str(load_default=""),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(["application/json", "application/octet-stream"]),
        ),
    }


def predict(seconds, size, pidfile, log, accept, data=None):
    if pidfile:
        with open(pidfile, "w") as file:
            file.write(str(os.getpid()))
    if log:
        LOG.warning("probe says %s", log)
    for step in range(4):
        time.sleep(seconds / 4)
        report((step + 1) / 4, f"step {step + 1} of 4")
    if size:
        return bytes(range(256)) * (size // 256) + bytes(size % 256)
    answer = {"pid": os.getpid(), "gpu": os.environ.get("CUDA_VISIBLE_DEVICES")}
    if data is not None:
        with open(data.filename, "rb") as file:
            content = file.read()
        answer.update(
            size=len(content),
            sha256=hashlib.sha256(content).hexdigest(),
            filename=data.original_filename,
            local=os.path.dirname(data.filename),
        )
    return answer


def get_train_args():
    return {"seconds": fields.Float(load_default=0.0), "pidfile": fields.Str(load_default="")}


def train(seconds, pidfile):
    if pidfile:
        with open(pidfile, "w") as file:
            file.write(str(os.getpid()))
    steps = 10
    for step in range(steps):
        time.sleep(seconds / steps)
        report((step + 1) / steps, f"epoch {step + 1} of {steps}")
    return {"pid": os.getpid(), "epochs": steps}
