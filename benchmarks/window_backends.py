"""One forward pass of the paper's SCA-UNet 3D on CPU, run by each way this machine offers.

The sliding windows are ≈ 95 % of a prediction's time, so this is where a backend pays. A
batch of windows (128 × 128 × 64, the paper's patch; random weights, torch seed 0; random
input) goes through:

- torch: PyTorch float32, as `kidneyseg predict --backend torch` runs it (the reference);
- torch-channels-last: the same with `channels_last_3d` weights and input;
- torch-bf16: PyTorch under CPU bfloat16 autocast (`--precision bfloat16`);
- openvino / openvino-bf16: `kidneyseg.predict.backends.OpenVINONetwork` (TorchScript trace →
  OpenVINO), float32 / bfloat16 inference precision (`--backend openvino`);
- openvino-int8: the same quantised by NNCF, calibrated on phantom windows as `--precision int8`
  does (`kidneyseg.predict.calibration`; set-up includes making the windows and quantising:
  the compile cache is off, as on a first run);
- openvino-int8-bf16: that int8 model with bfloat16 for what NNCF leaves unquantised (not
  offered: measured to see where int8 would pay);
- openvino-export: the graph from `torch.export` instead of the tracer, float32;
- onnxruntime: ONNX export → ONNX Runtime CPU, float32 (if `onnxruntime` is installed).

Reported: median seconds per pass over `--repeats` passes after one warm-up, the speed-up over
torch and over openvino (float32) measured in the same run, the largest logit difference from
torch, and the fraction of voxels whose argmax equals torch's (random weights make the argmax
fragile: a floor, not the label agreement of a trained model).

Usage:
    python benchmarks/window_backends.py [--batch 1] [--repeats 5] [--only torch openvino ...]
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import io
import json
import os
import statistics
import time
import warnings
from collections.abc import Callable

import numpy as np
import torch

from kidneyseg.config import RunConfig
from kidneyseg.predict.compile_cache import CACHE_ENV


def timed(fn: Callable[[], np.ndarray], repeats: int) -> tuple[float, np.ndarray]:
    out = fn()
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        out = fn()
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds), out


def runners(
    net: torch.nn.Module, window: tuple[int, ...], threads: int, config: RunConfig
) -> dict[str, Callable]:
    """Name → a function building the runner (so that set-up time is kept out of the timing)."""
    from kidneyseg.predict.backends import OpenVINONetwork, import_openvino
    from kidneyseg.predict.calibration import CalibrationSet

    def plain():
        return lambda x: net(x).numpy()

    def channels_last():
        cl = copy.deepcopy(net).to(memory_format=torch.channels_last_3d)
        return lambda x: cl(x.contiguous(memory_format=torch.channels_last_3d)).numpy()

    def bf16():
        def run(x):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return net(x).float().numpy()

        return run

    def openvino(precision):
        def build():
            compiled = OpenVINONetwork(net, window, precision, threads)
            return lambda x: compiled(x).numpy()

        return build

    def openvino_int8(rest: str):
        def build():
            compiled = OpenVINONetwork(
                net, window, "int8", threads, CalibrationSet(config.preprocess, window)
            )
            if rest == "f32":
                return lambda x: compiled(x).numpy()
            config_bf16 = {"INFERENCE_PRECISION_HINT": rest, "INFERENCE_NUM_THREADS": threads}
            core = import_openvino().Core()
            request = core.compile_model(compiled._model, "CPU", config_bf16).create_infer_request()

            def run(x):
                request.infer([x.numpy()])
                return request.get_output_tensor(0).data.copy()

            return run

        return build

    def openvino_export():
        import openvino as ov

        dims = ({0: torch.export.Dim("batch", min=1, max=64)},)
        exported = torch.export.export(net, (torch.zeros(2, *window),), dynamic_shapes=dims)
        model = ov.convert_model(exported, input=[(-1, *window)])
        config = {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": threads}
        request = ov.Core().compile_model(model, "CPU", config).create_infer_request()

        def run(x):
            request.infer([x.numpy()])
            return request.get_output_tensor(0).data.copy()

        return run

    def onnxruntime():
        import onnxruntime as ort

        buffer = io.BytesIO()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                net,
                (torch.zeros(1, *window),),
                buffer,
                input_names=["x"],
                dynamic_axes={"x": {0: "batch"}},
                dynamo=False,
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        session = ort.InferenceSession(buffer.getvalue(), options, providers=["CPUExecutionProvider"])
        return lambda x: session.run(None, {"x": x.numpy()})[0]

    found = {
        "torch": plain,
        "torch-channels-last": channels_last,
        "torch-bf16": bf16,
        "openvino": openvino("float32"),
        "openvino-bf16": openvino("bfloat16"),
        "openvino-int8": openvino_int8("f32"),
        "openvino-int8-bf16": openvino_int8("bf16"),
        "openvino-export": openvino_export,
    }
    if importlib.util.find_spec("nncf") is None:
        del found["openvino-int8"], found["openvino-int8-bf16"]
    if importlib.util.find_spec("onnxruntime") is not None:
        found["onnxruntime"] = onnxruntime
    return found


def main() -> None:
    from kidneyseg.checkpoint import build_model_from_config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batch", type=int, default=1, help="Windows per pass (CPU default: 1).")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--only", nargs="+", help="Run only these (torch, the reference, always runs).")
    args = parser.parse_args()

    os.environ[CACHE_ENV] = ""  # every set-up traces (and quantises) as a first run does
    torch.manual_seed(0)
    config = RunConfig()
    window = (1, *config.inference.roi_size)
    x = torch.from_numpy(np.random.default_rng(0).random((args.batch, *window), dtype=np.float32))
    threads = torch.get_num_threads()
    results: dict = {"batch": args.batch, "window": window, "threads": threads, "runs": {}}
    reference = None
    found = runners(build_model_from_config(config).eval(), window, threads, config)
    for name, build in found.items():
        if args.only and name != "torch" and name not in args.only:
            continue
        start = time.perf_counter()
        run = build()
        setup = time.perf_counter() - start
        with torch.inference_mode():
            seconds, out = timed(lambda run=run: run(x.clone()), args.repeats)
        if reference is None:
            reference = (seconds, out)
        entry = {
            "seconds_per_pass": round(seconds, 3),
            "setup_seconds": round(setup, 2),
            "speedup_vs_torch": round(reference[0] / seconds, 2),
            "speedup_vs_openvino": None,
            "max_logit_difference": float(np.abs(out - reference[1]).max()),
            "argmax_agreement": float(np.mean(out.argmax(1) == reference[1].argmax(1))),
        }
        if name == "openvino":
            entry["speedup_vs_openvino"] = 1.0
        elif "openvino" in results["runs"]:
            entry["speedup_vs_openvino"] = round(results["runs"]["openvino"]["seconds_per_pass"] / seconds, 2)
        results["runs"][name] = entry
        print(name, json.dumps(entry), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
