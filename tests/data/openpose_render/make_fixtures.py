"""Renders keypoints.json with controlnet-aux's own OpenPose drawing functions, into <name>.png beside it.

Run it with a Python that has controlnet-aux installed (see README.md here); it is not part of the test suite.
controlnet-aux's package `__init__` imports every detector (torch, torchvision), and `open_pose/util.py` imports
`Keypoint` from `open_pose/body.py` (torch, scipy) only for type hints. So this script registers empty package
modules and a stand-in `body` module holding a `Keypoint` record, then loads `util.py` itself from the installed
package: nothing of controlnet-aux is copied here.
"""

import importlib.util
import json
import sys
import types
from pathlib import Path
from typing import NamedTuple

import numpy as np
from PIL import Image

HERE = Path(__file__).parent


class Keypoint(NamedTuple):
    x: float
    y: float
    score: float = 1.0
    id: int = -1


def load_util():
    package_dir = Path(importlib.util.find_spec("controlnet_aux").submodule_search_locations[0])
    for name, path in [("controlnet_aux", package_dir), ("controlnet_aux.open_pose", package_dir / "open_pose")]:
        module = types.ModuleType(name)
        module.__path__ = [str(path)]
        sys.modules[name] = module
    body = types.ModuleType("controlnet_aux.open_pose.body")
    body.Keypoint, body.BodyResult = Keypoint, tuple
    sys.modules[body.__name__] = body
    spec = importlib.util.spec_from_file_location("controlnet_aux.open_pose.util", package_dir / "open_pose/util.py")
    util = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(util)
    return util


def keypoints(rows, missing_as):
    """controlnet-aux's forms: a missing body joint is None, a missing hand or face point sits at (-1, -1)."""
    return [Keypoint(x, y) if c > 0 else missing_as for x, y, c in rows]


def main():
    util = load_util()
    for case in json.loads((HERE / "keypoints.json").read_text()):
        canvas = np.zeros((case["height"], case["width"], 3), np.uint8)
        canvas = util.draw_bodypose(canvas, keypoints(case["body"], None))
        for hand in case["hands"] or []:
            canvas = util.draw_handpose(canvas, keypoints(hand, Keypoint(-1.0, -1.0)))
        if case["face"] is not None:
            canvas = util.draw_facepose(canvas, keypoints(case["face"], Keypoint(-1.0, -1.0)))
        Image.fromarray(canvas).save(HERE / f"{case['name']}.png")
        print(case["name"], canvas.shape)


if __name__ == "__main__":
    main()
