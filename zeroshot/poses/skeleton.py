"""The OpenPose COCO-18 skeleton: joint order, bones, and the colours the OpenPose ControlNet was trained on.

Facts only (joint order of OpenPose's COCO model, the limb list and colours of ControlNet's annotator); every other
module of `zeroshot.poses` takes its skeleton from here.
"""

from __future__ import annotations

#: OpenPose COCO-18 joint names, in array order.
JOINT_NAMES: tuple[str, ...] = (
    "nose", "neck",
    "right_shoulder", "right_elbow", "right_wrist",
    "left_shoulder", "left_elbow", "left_wrist",
    "right_hip", "right_knee", "right_ankle",
    "left_hip", "left_knee", "left_ankle",
    "right_eye", "left_eye", "right_ear", "left_ear",
)  # fmt: skip
NUM_JOINTS = len(JOINT_NAMES)
#: Index of each joint by name.
JOINT = {name: index for index, name in enumerate(JOINT_NAMES)}
NOSE, NECK = JOINT["nose"], JOINT["neck"]
RIGHT_WRIST, LEFT_WRIST = JOINT["right_wrist"], JOINT["left_wrist"]
RIGHT_HIP, LEFT_HIP = JOINT["right_hip"], JOINT["left_hip"]

#: The 17 limbs as (parent, child) joint indices, in the order the OpenPose annotator draws them. Together they form
#: a tree rooted at the neck, so each joint but the neck has exactly one parent.
LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10),
    (1, 11), (11, 12), (12, 13), (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)  # fmt: skip
#: Parent of each joint in the limb tree (-1 for the neck, the root).
PARENT: tuple[int, ...] = tuple(
    next((parent for parent, child in LIMBS if child == joint), -1) for joint in range(NUM_JOINTS)
)
#: Joints ordered so that every parent comes before its children.
TREE_ORDER: tuple[int, ...] = (NECK, *(child for _, child in LIMBS))
#: Limbs that measure body size for alignment: torso, arms, legs and neck-nose (the face limbs are too small and
#: too often turned away to give a reliable scale).
BODY_LIMBS: tuple[tuple[int, int], ...] = LIMBS[:13]

#: RGB colour of each joint, and of the limb with the same index (drawn at 60% intensity).
COLORS: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0),
    (0, 255, 0), (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255),
    (0, 0, 255), (85, 0, 255), (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)  # fmt: skip

NUM_FACE_POINTS = 70
NUM_HAND_POINTS = 21
#: The 20 hand bones (OpenPose hand-21: wrist 0, then four points per finger from thumb to little finger).
HAND_EDGES: tuple[tuple[int, int], ...] = tuple(
    pair for finger in range(5) for pair in ((0 if k == 0 else 4 * finger + k, 4 * finger + k + 1) for k in range(4))
)
