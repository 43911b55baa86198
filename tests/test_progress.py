"""Progress bars that end at their totals."""

import torch

from zeroshot.pacm import PACMSettings, run_pacm
from zeroshot.prompts import encode_prompt


def test_pacm_bars_end_at_their_totals(tiny_components, monkeypatch):
    """3 target frames in chunks of 2 over 2 steps: the frame bar counts frames x steps (6), so a bar that advanced
    once per chunk and step would end at 4 of 6."""
    import zeroshot.pacm.progress as progress

    ended = []

    class RecordingBar(progress.tqdm):  # the real bar, noting where it ends
        def close(self):
            if not self.disable:
                ended.append((self.desc, self.n, self.total))
            super().close()

    monkeypatch.setattr(progress, "tqdm", RecordingBar)
    settings = PACMSettings(
        num_inference_steps=2, source_inner_steps=1, early_stop_epsilon=0.0, early_stop_slope=0.0, frame_chunk_size=2
    )
    generator = torch.Generator().manual_seed(0)
    latent = torch.randn(1, 4, 8, 8, generator=generator)
    pose, targets = torch.rand(1, 3, 64, 64, generator=generator), torch.rand(3, 3, 64, 64, generator=generator)
    prompt = encode_prompt(tiny_components, "a photo of an astronaut", subject="astronaut")
    run_pacm(tiny_components, latent, prompt, pose, targets, settings, show_progress=True)
    assert ended == [
        ("PACM DDIM inversion", 2, 2),
        ("PACM source embeddings", 2, 2),
        ("PACM frame embeddings", 6, 6),
    ]
