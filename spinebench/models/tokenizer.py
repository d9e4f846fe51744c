"""The CLIP text tokenizer, buildable offline.

Without pretrained weights the models start from random weights, but the tokenizer still has to
be CLIP's: prompts then mean the same token ids a pretrained CLIP/CLIPSeg would see, and a run can
switch to pretrained weights without changing anything else. The BPE merges ship inside the
installed ``open_clip`` package, so the vocabulary is rebuilt from them (as OpenAI's CLIP does)
instead of being fetched from a hub.

Padding and pooling: HF's CLIP tokenizer pads with ``<|endoftext|>`` (49407); open_clip pads with
0. CLIP and CLIPSeg pool the text at the *first* end-of-text token (``input_ids == eos`` or, for
old configs with ``eos_token_id == 2``, ``argmax(input_ids)``, which returns the first maximum),
and the text encoder is causal, so nothing after that token can change the pooled embedding. Both
paddings, any padded length, and passing or omitting ``attention_mask`` give the same text
embedding; the tests check this. Truncation keeps the end-of-text token last, as open_clip does.

Text cleaning: HF's tokenizer NFC-normalises, collapses whitespace and lower-cases; open_clip also
runs ftfy and ``html.unescape``, which only differ on mojibake or HTML entities, never on prompts
built from class names.
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import logging
from pathlib import Path

from transformers import BatchEncoding, CLIPTokenizer, PreTrainedTokenizerBase

from spinebench.models.vlm import PretrainedUnavailable, is_local_path, unavailable_message

log = logging.getLogger(__name__)

CONTEXT_LENGTH = 77
"""CLIP's text context: 75 BPE tokens plus start and end."""
BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
BOS_ID = 49406
EOS_ID = 49407
VOCAB_SIZE = 49408
_NUM_MERGES = VOCAB_SIZE - 256 * 2 - 2  # 48894: CLIP keeps this many merges of the BPE file
_MIN_VOCAB = 1000  # fewer tokens: nothing was really loaded


def build_tokenizer(
    pretrained: str | None, *, allow_download: bool = False, flag: str = "method.pretrained"
) -> PreTrainedTokenizerBase:
    """CLIP's tokenizer: from a saved folder, a Hugging Face id, or built offline when ``None``.

    A hub id loads from the local Hugging Face cache only, unless ``allow_download`` is set, so a
    run never touches the network by surprise. A folder without tokenizer files (weights saved
    without one) gets the offline CLIP tokenizer: every CLIP/CLIPSeg checkpoint shares its
    vocabulary. ``flag`` names the option the user sets, for the error message.
    """
    if pretrained is None:
        return _offline_clip_tokenizer()
    if is_local_path(pretrained):
        folder = Path(pretrained).expanduser()
        if not folder.is_dir():
            raise PretrainedUnavailable(unavailable_message(pretrained, "tokenizer", flag))
        if not any((folder / f).is_file() for f in ("tokenizer.json", "vocab.json")):
            log.info("%s holds no tokenizer files; using the built-in CLIP tokenizer", folder)
            return _offline_clip_tokenizer()
        source, local_only = str(folder), True
    else:
        source, local_only = pretrained, not allow_download
    try:
        tokenizer = CLIPTokenizer.from_pretrained(source, local_files_only=local_only)
    except (OSError, ValueError) as error:
        raise PretrainedUnavailable(
            unavailable_message(pretrained, "tokenizer", flag, allow_download, error)
        ) from None
    if len(tokenizer) < _MIN_VOCAB:
        # transformers 5 returns a near-empty tokenizer for a hub id missing from the cache.
        raise PretrainedUnavailable(
            unavailable_message(pretrained, "tokenizer", flag, allow_download)
        )
    if tokenizer.model_max_length > CONTEXT_LENGTH:
        tokenizer.model_max_length = CONTEXT_LENGTH
    return tokenizer


def tokenize_prompts(
    tokenizer: PreTrainedTokenizerBase, prompts: list[str], *, padding: str = "max_length"
) -> BatchEncoding:
    """``input_ids`` and ``attention_mask`` as LongTensors, truncated to CLIP's 77 tokens.

    ``padding="longest"`` is cheaper and gives the same pooled text embeddings (see the module
    docstring); "max_length" gives CLIP's fixed [K, 77] shape.
    """
    return tokenizer(
        prompts,
        padding=padding,
        truncation=True,
        max_length=CONTEXT_LENGTH,
        return_tensors="pt",
    )


def clip_bpe_path() -> Path:
    """The BPE merges file open_clip ships (the one OpenAI's CLIP was trained with).

    Found without importing open_clip, whose import sets ``TOKENIZERS_PARALLELISM`` in the
    environment (methods build tokenizers, and a method leaves the environment alone).
    """
    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("open_clip is not installed; pip install open-clip-torch")
    return Path(next(iter(spec.submodule_search_locations))) / "bpe_simple_vocab_16e6.txt.gz"


def _byte_symbols() -> list[str]:
    """One printable unicode character per byte, in CLIP's vocabulary order.

    Printable latin-1 bytes stand for themselves; the other bytes (controls, space, ...) are
    mapped, in byte order, to code points from 256 upwards so BPE never sees whitespace.
    """
    printable = [*range(0x21, 0x7F), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    kept = set(printable)
    symbols = [chr(b) for b in printable]
    symbols += [chr(256 + n) for n, _ in enumerate(b for b in range(256) if b not in kept)]
    return symbols


def _vocab_and_merges(bpe_file: Path) -> tuple[dict[str, int], list[str]]:
    """Rebuild CLIP's 49408-token vocabulary and its merges from the BPE file."""
    lines = gzip.decompress(bpe_file.read_bytes()).decode("utf-8").split("\n")
    merges = lines[1 : 1 + _NUM_MERGES]  # line 0 is a header
    if len(merges) != _NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise RuntimeError(f"{bpe_file} is not CLIP's BPE merges file")
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [m.replace(" ", "") for m in merges]
    tokens += [BOS_TOKEN, EOS_TOKEN]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE:
        raise RuntimeError(f"rebuilt CLIP vocabulary has {len(vocab)} tokens, not {VOCAB_SIZE}")
    return vocab, merges


@functools.cache
def _offline_clip_tokenizer() -> PreTrainedTokenizerBase:
    """Built in memory from the BPE file, once per process: methods build their tokenizer, and a
    method never writes files, so nothing is cached on disk (about a second to rebuild)."""
    vocab, merges = _vocab_and_merges(clip_bpe_path())
    return CLIPTokenizer(
        vocab=vocab,
        merges=[tuple(m.split()) for m in merges],  # type: ignore[misc]  # HF accepts pairs
        model_max_length=CONTEXT_LENGTH,
    )
