"""A stand-in for ais_bench's ``InferSession`` in tests, over the fake ``atc``'s .om files.

Like the real one it returns the outputs as a list in the .om's output order (ATC's
``--out_node``), and it does not promise the ONNX output names: they read ``output_0``, ...
"""
import json
from types import SimpleNamespace

import onnxruntime as ort


class InferSession:
    def __init__(self, device_id, model_path):
        with open(model_path) as fh:
            self.om = json.load(fh)
        self.session = ort.InferenceSession(self.om["onnx"], providers=["CPUExecutionProvider"])

    def get_inputs(self):
        return [SimpleNamespace(name=self.om["input"], shape=self.om["shape"])]

    def get_outputs(self):
        return [SimpleNamespace(name=f"output_{i}") for i in range(len(self.om["out_nodes"]))]

    def infer(self, feeds):
        names = [o.name for o in self.session.get_outputs()]
        by_name = dict(zip(names, self.session.run(None, {self.om["input"]: feeds[0]})))
        return [by_name[n] for n in self.om["out_nodes"]]
