"""Face refinement: a training-free second pass on face crops through the same hooks (boxes from poses, crops,
PACM and generation on the crops, feathered paste-back).

[`FaceRefinement`] (settings) and the boxes and crops are torch-free; the pass itself is
[`zeroshot.face.refinement.refine_faces`], which `PoseAnimatePipeline(..., face_refinement=FaceRefinement())` runs.
"""

from .boxes import FaceBoxes, check_source_face, face_boxes
from .settings import DEFAULT_STRENGTH, FaceRefinement

__all__ = ["DEFAULT_STRENGTH", "FaceBoxes", "FaceRefinement", "check_source_face", "face_boxes"]
