"""Label-word scoring for causal language models (`model.head: verbalizer`).

A causal LM already knows how to answer "Review: a gripping film. Sentiment:" with " positive". Instead of
a fresh classification head on the last token (which throws that knowledge away and must be learned from a
few hundred rows), each row is written into a prompt template and a class is scored by the LM head's
log-probability of its label word at the answer position (the token after the prompt):

    score_k = log p(label_word_k | prompt)          (first token of each label word)

Training is cross-entropy over these scores (a softmax restricted to the label words), so nothing new is
initialised and the untrained model already scores its zero-shot accuracy. Regression (STS-B) reads out the
expected value of the label words' values under that restricted softmax, e.g. words "0".."5" with values
0..5 (or their centred scale), trained by mean squared error like a regression head.

Templates name the row's texts `{text_a}` (the first text column) and `{text_b}` (the second); other braces
are written `{{` `}}`. When a row is too long for `model.max_length`, the texts are cut, never the template,
so the answer cue always ends the prompt.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from typing import Optional, Sequence

import torch
from torch import nn

FIELDS = ("text_a", "text_b")


class VerbalizerError(ValueError):
    """A template or label-word list that cannot score a task (one line naming the key)."""


def template_fields(template: str) -> list[str]:
    """The placeholders of a template, in order; raises VerbalizerError on a malformed or unknown one."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise VerbalizerError(f"model.verbalizer.template: {exc} (write a literal brace as {{{{ or }}}})") from None
    names = []
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in FIELDS or spec or conversion:
            raise VerbalizerError(
                f"model.verbalizer.template: unknown placeholder {{{name}}}; use {{text_a}} and, for sentence "
                "pairs, {text_b} (a literal brace is written {{ or }})"
            )
        names.append(name)
    return names


def check_template(template: str, num_texts: int) -> None:
    """A template must place every text of a row once: {text_a}, and {text_b} for pairs."""
    names = template_fields(template)
    want = list(FIELDS[:num_texts])
    if sorted(names) != sorted(want):
        raise VerbalizerError(
            f"model.verbalizer.template must contain {' and '.join('{' + n + '}' for n in want)} once each "
            f"(data.text_columns has {num_texts} column{'s' if num_texts > 1 else ''}); it has "
            f"{', '.join('{' + n + '}' for n in names) or 'no placeholder'}"
        )


def default_template(num_texts: int, label_words: Sequence[str]) -> str:
    """A generic prompt for data without a task template: the text(s), then the answer choices."""
    choices = " or ".join(w.strip().replace("{", "{{").replace("}", "}}") for w in label_words)
    body = "{text_a}" if num_texts == 1 else "First: {text_a}\nSecond: {text_b}"
    return body + f"\nAnswer ({choices}):"


@dataclass(frozen=True)
class Verbalizer:
    """A task's prompt and label words. `label_values` (regression): the value each word stands for.
    `derived`: the words were made from the label names (error messages then say how to set them)."""

    template: str
    label_words: tuple[str, ...]
    label_values: Optional[tuple[float, ...]] = None
    derived: bool = field(default=False, compare=False)
    regression_loss: str = "mse"  # mse | soft_ce (VerbalizerHead.loss)

    @property
    def regression(self) -> bool:
        return self.label_values is not None

    def for_tokenizer(self, tokenizer) -> "Verbalizer":
        """The same prompt, fitted to how `tokenizer` splits the label words: when every word begins with a
        space that the tokenizer makes a token of its own (SmolLM2 reads " 0" as " " + "0"), that shared
        space moves to the end of the template, so the scored token is the one that tells the words apart."""
        firsts = [_first_token(tokenizer, w) for w in self.label_words]
        shared_space = all(w[:1].isspace() for w in self.label_words) and all(
            tokenizer.decode([t]).strip() == "" for t in firsts if t is not None
        )
        if not shared_space or self.template[-1:].isspace():
            return self
        words = tuple(w[1:] for w in self.label_words)
        return replace(self, template=self.template + self.label_words[0][0], label_words=words)

    def label_token_ids(self, tokenizer) -> list[int]:
        """The first token of each label word. Words must differ in their first token (only it is scored)
        and be ordinary vocabulary (not a special or unknown token)."""
        how = " (made from data.label_names; set model.verbalizer.label_words)" if self.derived else ""
        special = set(getattr(tokenizer, "all_special_ids", []) or [])
        ids = []
        for word in self.label_words:
            first = _first_token(tokenizer, word)
            if first is None:
                raise VerbalizerError(f"model.verbalizer.label_words: {word!r} has no tokens{how}")
            if first in special or first == getattr(tokenizer, "unk_token_id", None):
                shown = tokenizer.convert_ids_to_tokens(first)
                raise VerbalizerError(
                    f"model.verbalizer.label_words: {word!r} begins with the special or unknown token {shown!r}, "
                    f"not a word of the model's vocabulary{how}"
                )
            ids.append(first)
        if len(set(ids)) < len(ids):
            clash = [w for w, i in zip(self.label_words, ids) if ids.count(i) > 1]
            raise VerbalizerError(
                f"model.verbalizer.label_words {clash} begin with the same token; only the first token of a "
                f"label word is scored, so each must begin differently (e.g. ' yes' / ' no'){how}"
            )
        return ids

    def render(self, rows: Sequence[Sequence[str]], tokenizer, max_length: int) -> list[str]:
        """Each row's prompt. A prompt longer than `max_length` tokens has its texts cut (the longer text
        first, token by token through the tokenizer) so the template's answer cue is never truncated. The
        tokenizer's special-token strings are removed from the texts: a row holding "<|im_end|>" must not
        close a chat prompt's turn and write the answer."""
        if not rows:
            return []
        placed = len(template_fields(self.template))
        if len(rows[0]) != placed:
            raise VerbalizerError(
                f"model.verbalizer.template places {placed} text(s) but each row has {len(rows[0])} "
                "(data.text_columns); use {text_a} and, for sentence pairs, {text_b}"
            )
        specials = sorted(
            {t for t in [*getattr(tokenizer, "all_special_tokens", []), *_added_tokens(tokenizer)] if t},
            key=len,
            reverse=True,
        )
        rows = [tuple(_without(t, specials) for t in row) for row in rows] if specials else rows
        prompts = [self._fill(row) for row in rows]
        lengths = [len(ids) for ids in tokenizer(prompts, add_special_tokens=True)["input_ids"]]
        overhead = len(tokenizer(self._fill([""] * len(rows[0])), add_special_tokens=True)["input_ids"])
        if overhead >= max_length:
            raise VerbalizerError(
                f"model.verbalizer.template takes {overhead} tokens without any text, which leaves nothing of "
                f"model.max_length={max_length}; raise max_length or shorten the template"
            )
        for k, n in enumerate(lengths):
            if n > max_length:
                prompts[k] = self._fill(_cut_texts(rows[k], tokenizer, max_length - overhead))
        return prompts

    def _fill(self, row: Sequence[str]) -> str:
        return self.template.format(**dict(zip(FIELDS, row)))


def _first_token(tokenizer, word: str) -> Optional[int]:
    tokens = tokenizer(word, add_special_tokens=False)["input_ids"]
    return int(tokens[0]) if tokens else None


def _added_tokens(tokenizer) -> list[str]:
    try:
        return list(tokenizer.get_added_vocab())
    except Exception:  # a tokenizer without added-vocabulary support
        return []


def _without(text: str, specials: Sequence[str]) -> str:
    for token in specials:
        if token in text:
            text = text.replace(token, "")
    return text


def _cut_texts(row: Sequence[str], tokenizer, budget: int) -> list[str]:
    """The row's texts cut to `budget` tokens together: the longest text loses tokens first."""
    ids = [tokenizer(t, add_special_tokens=False)["input_ids"] for t in row]
    # one token of slack per text: re-joining cut tokens can merge differently at the cut
    keep = [len(x) for x in ids]
    while sum(keep) > max(budget - len(row), 0):
        longest = max(range(len(keep)), key=lambda i: keep[i])
        keep[longest] -= 1
    return [tokenizer.decode(x[:n], skip_special_tokens=True) for x, n in zip(ids, keep)]


class VerbalizerHead(nn.Module):
    """Label-word scores from the final hidden state at the answer position, through the backbone's own
    (frozen) LM head: the log-probabilities of the label words, (batch, words). `predict` reads a class (the
    most probable word) or, for regression, the expected label value under the words' renormalised
    probabilities; `loss` is cross-entropy over the words (classification) or, for regression, the squared
    error of that expected value (`mse`) or the cross-entropy against the target split between the two nearest
    label values (`soft_ce`, `soft_targets`)."""

    def __init__(
        self,
        lm_head: nn.Module,
        label_ids: Sequence[int],
        label_values: Optional[Sequence[float]] = None,
        logit_scale: float = 1.0,
        softcap: Optional[float] = None,
        regression_loss: str = "mse",
    ):
        """`logit_scale`, `softcap`: what the architecture's own forward does to the LM head's output
        (Cohere's logit_scale, Granite's 1 / logits_scaling, Gemma 2's final_logit_softcapping)."""
        super().__init__()
        if regression_loss not in ("mse", "soft_ce"):
            raise ValueError(f"regression_loss must be mse or soft_ce, not {regression_loss!r}")
        if regression_loss == "soft_ce" and label_values is not None and len(set(label_values)) < len(label_values):
            raise ValueError("soft_ce needs label values that differ from each other")
        self.lm_head = lm_head
        self.logit_scale, self.softcap = float(logit_scale), softcap
        self.regression_loss = regression_loss
        for p in self.lm_head.parameters():
            p.requires_grad_(False)
        self.register_buffer("label_ids", torch.tensor(list(label_ids), dtype=torch.long), persistent=False)
        values = torch.tensor(list(label_values), dtype=torch.float32) if label_values is not None else None
        self.register_buffer("label_values", values, persistent=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = self.lm_head(hidden).float() * self.logit_scale  # (batch, vocab): one position per row
        if self.softcap:
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return torch.log_softmax(logits, dim=-1)[:, self.label_ids]

    def predict(self, scores: torch.Tensor) -> torch.Tensor:
        """(batch,) class ids, or expected label values (regression)."""
        if self.label_values is None:
            return scores.argmax(-1)
        return (torch.softmax(scores, dim=-1) * self.label_values).sum(-1)

    def loss(self, scores: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        if self.label_values is None:
            return nn.functional.cross_entropy(scores, labels)  # renormalises over the label words
        if self.regression_loss == "mse":
            return nn.functional.mse_loss(self.predict(scores), labels.float())
        target = soft_targets(labels.float(), self.label_values)
        return -(target * torch.log_softmax(scores, dim=-1)).sum(-1).mean()


def soft_targets(y: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """(batch, words): each target y split between the two label values around it, linearly (y = 3.4 over
    values 0..5 -> 0.6 on "3", 0.4 on "4"), so the target distribution's expected value is y (clipped to the
    values' range). With two words this is LM-BFF's regression objective (Gao et al., 2021). `values` need
    not be sorted but must differ from each other."""
    order = torch.argsort(values)
    v = values[order]
    if len(v) == 1:
        return torch.ones(len(y), 1, dtype=v.dtype, device=v.device)
    y = y.clamp(v[0], v[-1])
    hi = torch.searchsorted(v, y.contiguous()).clamp(1, len(v) - 1)  # the value at or above y
    lo = hi - 1
    w = (y - v[lo]) / (v[hi] - v[lo])
    rows = torch.arange(len(y), device=y.device)
    target = torch.zeros(len(y), len(v), dtype=v.dtype, device=v.device)
    target[rows, lo] = 1.0 - w
    target[rows, hi] = w
    out = torch.empty_like(target)
    out[:, order] = target
    return out


def choose_verbalizer(
    head: str,
    template: Optional[str],
    label_words: Optional[Sequence[str]],
    label_values: Optional[Sequence[float]],
    causal: bool,
    num_texts: int,
    num_labels: int,
    label_names: Optional[Sequence[str]],
    regression: bool,
    regression_loss: str = "mse",
) -> Optional[Verbalizer]:
    """`model.head` and `model.verbalizer` for a backbone and a task -> the Verbalizer to score with, or None
    for a linear head. `auto` picks label-word scoring for a causal LM whenever it has words to score:
    configured ones, or (classification) the label names; a regression task without configured words and
    values gets the linear head."""
    if head == "linear" or (head == "auto" and not causal):
        return None
    if not causal:
        raise VerbalizerError("model.head: verbalizer needs a causal language model (this backbone has no LM head)")
    if regression:
        if label_words is None or label_values is None:
            if head == "auto":
                return None  # nothing to score with: the linear head
            raise VerbalizerError(
                "model.head: verbalizer on a regression task needs model.verbalizer.label_words and label_values "
                "(e.g. words '0'..'5' with values 0..5)"
            )
        if len(label_values) != len(label_words):
            raise VerbalizerError("model.verbalizer.label_values: one value per label word")
        words, derived = tuple(label_words), False
    else:
        derived = label_words is None
        if derived:
            names = label_names or [str(k) for k in range(num_labels)]
            label_words = [" " + str(n).replace("_", " ") for n in names]
        if len(label_words) != num_labels:
            raise VerbalizerError(f"model.verbalizer.label_words: {len(label_words)} words for {num_labels} classes")
        words = tuple(label_words)
    template = template or default_template(num_texts, words)
    check_template(template, num_texts)
    values = tuple(float(v) for v in label_values) if regression else None
    return Verbalizer(
        template, words, values, derived=derived, regression_loss=regression_loss if regression else "mse"
    )


def logit_transform(config) -> tuple[float, Optional[float]]:
    """(scale, softcap) that an architecture's causal-LM forward applies to its LM head's output."""
    scale = float(getattr(config, "logit_scale", None) or 1.0) if config.model_type.startswith("cohere") else 1.0
    if getattr(config, "logits_scaling", None):  # Granite divides
        scale /= float(config.logits_scaling)
    return scale, getattr(config, "final_logit_softcapping", None)
