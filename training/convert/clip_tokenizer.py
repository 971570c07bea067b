"""CLIP's BPE tokenizer as a standard ``tokenizers`` pipeline, giving open_clip's ids.

open_clip's ``SimpleTokenizer`` (OpenAI's original) cleans every text (``ftfy.fix_text``, HTML
unescaping twice, whitespace collapsed, lower case), splits it with one regular expression, encodes
each piece's UTF-8 bytes as printable characters and merges them with 48,894 BPE merges whose
word-final symbols end in ``</w>``. The vocabulary is the 256 byte characters, the same with
``</w>``, one token per merge and ``<start_of_text>``/``<end_of_text>``: 49,408 ids, 49406 and 49407
the last two. A text becomes ``[49406, ..., 49407]``, cut to the context length with the end token
kept last.

Here the same steps are a ``tokenizers.Tokenizer`` saved as ``tokenizer.json``, so
``AutoTokenizer``, ``CLIPProcessor`` and the zero-shot pipeline load it without custom code.
transformers' own ``CLIPTokenizer`` is not used: it rebuilds its pipeline on loading and leaves
out open_clip's cleaning.

The cleaning is what a normaliser can express: HTML references of the characters web text uses
most (named and numeric, ``&amp;`` first so doubly escaped text decodes like open_clip's two
passes), curly quotes made straight (and Windows-1252's quote bytes), Latin ligatures split,
terminal escapes and control characters removed, NFC, Python's whitespace collapsed and stripped,
Greek final sigma, lower case. What a normaliser cannot express, and where ids can therefore
differ from open_clip's: ftfy's repair of mojibake (``cafÃ©``), HTML references outside the list
below, full-width forms (``ＡＢＣ``), other Windows-1252 control bytes, and ftfy leaving entities
alone in texts that contain ``<``. Each list entry costs a pass over the text, so the list stays
short. ``benchmarks/open_clip_parity.py`` counts the differences on real alt texts.

The special tokens keep open_clip's names and, as in open_clip, are found in the cleaned text.
Padding is the end token (49407), not open_clip's 0 (``!``): a pad token is matched as a special
token inside texts, so ``!`` as pad would split every ``!!`` into single ids. Padding sits after
the end token, where the causal mask and the pooling at the first end token make it unseen.

The vocabulary file is OpenAI's ``bpe_simple_vocab_16e6.txt.gz`` (MIT licence, ``CLIP_LICENSE.txt``).
"""

from __future__ import annotations

import gzip
import re
from functools import lru_cache
from html.entities import html5
from importlib import resources

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
from transformers import AddedToken, PreTrainedTokenizerFast

VOCAB_SIZE = 49408
MERGES = 48894  # lines 1..48894 of the merges file, as OpenAI and open_clip read it
START, END = "<start_of_text>", "<end_of_text>"  # open_clip's names (OpenAI's: <|startoftext|>, <|endoftext|>)
START_ID, END_ID = 49406, 49407

# OpenAI's split: contractions, letter runs, single digits, runs of anything else.
PIECES = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# Characters whose HTML references are decoded, '&' first (see the module docstring): ASCII
# punctuation and the non-ASCII characters web text escapes most.
ENTITY_TARGETS = "&" + " !\"#$%'()*+,-./:;<=>?@[\\]^_`{|}~" + (
    "\u00a0\u2019\u2018\u201c\u201d\u2013\u2014\u2026\u00a9\u00ae\u2122\u00b0\u20ac\u00a3\u00d7\u2022"
    "\u00e9\u00e8\u00e1\u00e0\u00e2\u00e4\u00e7\u00ea\u00eb\u00ed\u00ef\u00f1\u00f3\u00f4\u00f6\u00fa\u00fc\u00df"
)
# Latin typographic ligatures and legacy digraphs, written out (ftfy's fix_latin_ligatures).
LIGATURES = {
    "\u0132": "IJ", "\u0133": "ij", "\u0149": "\u02bcn", "\u01f1": "DZ", "\u01f2": "Dz", "\u01f3": "dz",
    "\u01c4": "D\u017d", "\u01c5": "D\u017e", "\u01c6": "d\u017e", "\u01c7": "LJ", "\u01c8": "Lj", "\u01c9": "lj",
    "\u01ca": "NJ", "\u01cb": "Nj", "\u01cc": "nj", "\ufb00": "ff", "\ufb01": "fi", "\ufb02": "fl",
    "\ufb03": "ffi", "\ufb04": "ffl", "\ufb05": "\u017ft", "\ufb06": "st",
}
# Control characters removed: C0 except tab, newline, form feed and carriage return; DEL; deprecated
# Arabic format controls; the byte order mark; interlinear annotation and the object replacement mark.
CONTROL = "[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]"
CASED = r"[\p{Lu}\p{Ll}\p{Lt}]"


def bytes_to_unicode() -> list[str]:
    """The printable character standing for each byte 0..255, in the vocabulary's order:
    printable Latin-1 bytes stand for themselves, the rest take code points from 256 up."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("\u00a1"), ord("\u00ac") + 1), *range(ord("\u00ae"), ord("\u00ff") + 1)]
    others = [byte for byte in range(256) if byte not in printable]
    return [chr(code) for code in printable] + [chr(256 + index) for index in range(len(others))]


@lru_cache(maxsize=1)
def _vocabulary() -> tuple[dict[str, int], list[tuple[str, str]]]:
    path = resources.files("entitynet.training.convert") / "clip_bpe_merges.txt.gz"
    lines = gzip.decompress(path.read_bytes()).decode("utf-8").split("\n")[1 : MERGES + 1]
    merges = [tuple(line.split()) for line in lines]
    characters = bytes_to_unicode()
    tokens = characters + [c + "</w>" for c in characters] + ["".join(pair) for pair in merges] + [START, END]
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != VOCAB_SIZE or vocab[END] != END_ID:
        raise RuntimeError(f"the packaged CLIP vocabulary is damaged: {len(vocab)} tokens, expected {VOCAB_SIZE}")
    return vocab, merges  # type: ignore[return-value]


def _reference_pattern(char: str) -> str:
    """Every HTML reference of ``char``: named (with ';'), decimal and hex, any leading zeros."""
    names = sorted(re.escape(name[:-1]) for name, value in html5.items() if value == char and name.endswith(";"))
    code = ord(char)
    return "&(?:" + "|".join([*names, f"#0*{code}", f"#[xX]0*{code:x}", f"#[xX]0*{code:X}"]) + ");"


def cleaning() -> normalizers.Normalizer:
    """open_clip's text cleaning, as far as a normaliser expresses it (module docstring)."""
    steps: list[normalizers.Normalizer] = [normalizers.Replace(Regex(_reference_pattern(c)), c) for c in ENTITY_TARGETS]
    steps += [
        normalizers.Replace(Regex("[\u02bc\u2018-\u201b\x91\x92]"), "'"),
        normalizers.Replace(Regex("[\u201c-\u201f\x93\x94]"), '"'),
    ]
    steps += [normalizers.Replace(ligature, plain) for ligature, plain in LIGATURES.items()]
    steps += [
        normalizers.Replace(Regex(r"\x1b\[[0-9;]*[a-zA-Z]"), ""),
        normalizers.Replace(Regex(CONTROL), ""),
        normalizers.NFC(),
        normalizers.Replace(Regex(r"\s+"), " "),
        normalizers.Strip(),
        # Python's str.lower() writes a word-final capital sigma as final sigma; Rust's per-character one does not.
        normalizers.Replace(Regex(f"(?<={CASED})\u03a3(?!{CASED})"), "\u03c2"),
        normalizers.Lowercase(),
    ]
    return normalizers.Sequence(steps)


def clip_tokenizer(context_length: int) -> PreTrainedTokenizerFast:
    """CLIP's BPE with open_clip's cleaning; ``tokenizer(texts, padding=True, truncation=True)``
    gives open_clip's ids for texts of up to ``context_length`` tokens."""
    vocab, merges = _vocabulary()
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                                     fuse_unk=False))
    tokenizer.normalizer = cleaning()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PIECES), behavior="removed", invert=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tokenizer.decoder = decoders.Sequence([decoders.ByteLevel(), decoders.Replace("</w>", " "), decoders.Strip(" ", 0, 1)])
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START} $A {END}", special_tokens=[(START, START_ID), (END, END_ID)])
    # normalized=True: open_clip finds its special tokens in the cleaned, lower-cased text, so here too.
    start, end = (AddedToken(token, special=True, normalized=True) for token in (START, END))
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer, bos_token=start, eos_token=end, pad_token=end, unk_token=None,
        model_max_length=context_length,
    )
