"""Text embeddings of prompts, as Stable Diffusion computes them, and where a subject word sits among the tokens."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import CLIPTextModel, PreTrainedTokenizerBase

from .components import ModelComponents
from .errors import ZeroshotError


@dataclass(frozen=True)
class PromptEmbeddings:
    """The two classifier-free-guidance embeddings of a prompt, and the positions of its subject's tokens.

    Args:
        conditional (`torch.Tensor`): `[L, D]` embedding of the prompt (L = 77 for CLIP).
        unconditional (`torch.Tensor`): `[L, D]` embedding of the negative prompt (usually `""`).
        subject_token_indices (`tuple[int, ...]`, *optional*, defaults to `()`):
            positions of the subject word's tokens in `conditional` (the start token counts as position 0); their
            cross-attention maps become the character masks. Empty: no masks are recorded.
    """

    conditional: torch.Tensor
    unconditional: torch.Tensor
    subject_token_indices: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.conditional.ndim != 2 or self.conditional.shape != self.unconditional.shape:
            raise ValueError(
                "conditional and unconditional embeddings must both be [tokens, dim]; got "
                f"{tuple(self.conditional.shape)} and {tuple(self.unconditional.shape)}."
            )
        bad = [index for index in self.subject_token_indices if not 0 <= index < self.conditional.shape[0]]
        if bad:
            raise ValueError(f"subject_token_indices {bad} lie outside the {self.conditional.shape[0]} prompt tokens.")


def subject_token_indices(tokenizer: PreTrainedTokenizerBase, prompt: str, subject: str) -> tuple[int, ...]:
    """Positions of every occurrence of the word(s) `subject` among the tokens of `prompt`, as the text encoder sees
    them (start token at 0, truncated to the tokenizer's `model_max_length`).

    A rare word is several tokens and a subject can be several words ("iron man"); every token is returned. Matches
    start at a word boundary, so "man" is not found inside "superman".

    Args:
        tokenizer (`PreTrainedTokenizerBase`): the CLIP tokenizer of the model.
        prompt (`str`): the prompt.
        subject (`str`): the word or words naming the character, e.g. `"astronaut"` or `"iron man"`.

    Raises:
        [`~zeroshot.errors.ZeroshotError`]: `subject` is not in `prompt` (or lies beyond its truncation).

    Example:

    ```py
    >>> subject_token_indices(components.tokenizer, "a photo of an astronaut", "astronaut")
    (5,)
    ```
    """
    ids = tokenizer(prompt, truncation=True, max_length=tokenizer.model_max_length).input_ids
    tokens = tokenizer.convert_ids_to_tokens(ids)
    wanted = tokenizer.convert_ids_to_tokens(tokenizer(subject, add_special_tokens=False).input_ids)
    if not wanted:
        raise ZeroshotError(f"The subject {subject!r} has no tokens; give the word that names the character.")
    found: list[int] = []
    for start in range(1, len(tokens) - len(wanted) + 1):
        at_word_start = start == 1 or tokens[start - 1].endswith("</w>")
        if at_word_start and tokens[start : start + len(wanted)] == wanted:
            found.extend(range(start, start + len(wanted)))
    if not found:
        raise ZeroshotError(
            f"The subject {subject!r} does not occur in the prompt {prompt!r} (within its first "
            f"{tokenizer.model_max_length} tokens); name the character with a word of the prompt."
        )
    return tuple(found)


@torch.no_grad()
def encode_texts(tokenizer: PreTrainedTokenizerBase, text_encoder: CLIPTextModel, texts: list[str]) -> torch.Tensor:
    """Stable Diffusion's text conditioning: the text encoder's last hidden state of each text, padded (and
    truncated) to the tokenizer's maximum length; float32 `[len(texts), L, D]` on the text encoder's device."""
    ids = tokenizer(
        texts, padding="max_length", max_length=tokenizer.model_max_length, truncation=True, return_tensors="pt"
    ).input_ids
    return text_encoder(ids.to(text_encoder.device))[0].float()


@torch.no_grad()
def encode_prompt(
    components: ModelComponents, prompt: str, *, subject: str | None = None, negative_prompt: str = ""
) -> PromptEmbeddings:
    """Encodes `prompt` and `negative_prompt` as Stable Diffusion does (last hidden state of CLIP, padded to the
    tokenizer's maximum length), on the text encoder's device, in float32.

    Args:
        components ([`~zeroshot.components.ModelComponents`]): the models (tokenizer and text encoder are used).
        prompt (`str`): describes the source image, e.g. `"a photo of an astronaut"`.
        subject (`str`, *optional*): the word naming the character, for the masks; `None` records no masks.
        negative_prompt (`str`, *optional*, defaults to `""`): the unconditional prompt.

    Example:

    ```py
    >>> prompt = encode_prompt(components, "a photo of an astronaut", subject="astronaut")
    >>> prompt.conditional.shape, prompt.subject_token_indices
    (torch.Size([77, 32]), (5,))
    ```
    """
    conditional, unconditional = encode_texts(components.tokenizer, components.text_encoder, [prompt, negative_prompt])
    indices = subject_token_indices(components.tokenizer, prompt, subject) if subject is not None else ()
    return PromptEmbeddings(conditional=conditional, unconditional=unconditional, subject_token_indices=indices)
