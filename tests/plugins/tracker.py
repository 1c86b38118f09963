"""A third-party experiment tracker for core's tests: a plugin that declares no model and only
implements ``log_metrics`` (as an MLflow or W&B plugin would), appending each call it receives
to the JSON-lines file named by ``DETCORE_TEST_TRACKER`` (with the worker's rank)."""
import json
import os

from detcore import hookimpl

DETCORE_API_VERSION = 1
LOG_ENV = "DETCORE_TEST_TRACKER"


@hookimpl
def log_metrics(ctx, event, step, epoch, metrics):
    record = {"rank": int(os.environ.get("RANK", 0)), "event": event, "step": step,
              "epoch": epoch, "metrics": metrics, "model": ctx.spec.name,
              "lr_in_config": ctx.config["optimizer"]["lr"]}
    with open(os.environ[LOG_ENV], "a") as fh:
        fh.write(json.dumps(record) + "\n")
