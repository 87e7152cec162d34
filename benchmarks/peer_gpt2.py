"""The peer stack of the generation-strategies paper (Volodkevich et al., arXiv:2409.17730).

A Hugging Face ``GPT2LMHeadModel`` over item ids, trained on next-item loss
(``model(input_ids, labels=input_ids)``, AdamW) and generating with ``model.generate`` (beam
search, a logits processor that bans the items already in the input or generated). Sized like
our models: same width, depth, heads, feed-forward width, item count, dropout; n_positions =
history + T.

torch and transformers are imported lazily (inside the functions): the rest of the benchmark
works without them. Install them with ``pip install -e .[bench]``.

Differences from the paper's own code, all in the peer's favour: it generated one user at a time
(``bad_words_ids`` needs batch size 1 there) with ``no_repeat_ngram_size=1``; here the ban is one
vectorised ``scatter`` per step over a whole batch of users.
"""
from __future__ import annotations

import os
import time
from typing import Any, Callable


def availability() -> tuple[bool, str]:
    """(True, versions) when torch and transformers import, else (False, the reason)."""
    try:
        import torch  # noqa: F401
        import transformers  # noqa: F401
    except Exception as e:  # ImportError, or a broken install
        return False, f'torch/transformers not importable: {type(e).__name__}: {e}'
    return True, f'torch {torch.__version__}, transformers {transformers.__version__}'


def _ban_processor_class():
    import torch
    from transformers import LogitsProcessor

    class BanSeenItems(LogitsProcessor):
        """Sets -inf for padding (item 0) and for every item already in the sequence (the user's
        history given as the prompt, and the items generated so far in that beam)."""

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
            scores = scores.scatter(1, input_ids, float('-inf'))
            scores[:, 0] = float('-inf')
            return scores

    return BanSeenItems


class PeerGPT2:
    """A sized GPT-2 with timed callables for one training step and one beam-search batch."""

    def __init__(self, *, num_items: int, width: int, layers: int, heads: int, mlp_dim: int,
                 dropout: float, history: int, T: int, beam: int, lr: float, dtype: str,
                 matmul_precision: str, device: str, seed: int = 0):
        import torch
        import transformers
        from transformers import GPT2Config, GPT2LMHeadModel, LogitsProcessorList

        transformers.logging.set_verbosity_error()   # no config chatter on stderr

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == 'cpu':
            torch.set_num_threads(os.cpu_count() or 1)
        else:
            # Match JAX: its default float32 matmul precision on GPU uses TF32; 'highest' is full fp32.
            tf32 = matmul_precision != 'highest'
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        torch.manual_seed(seed)
        self.T, self.beam = int(T), int(beam)
        self.vocab_size = num_items + 1                      # 0 = padding, items 1..N
        cfg = GPT2Config(vocab_size=self.vocab_size, n_positions=history + T, n_embd=width,
                         n_layer=layers, n_head=heads, n_inner=mlp_dim, resid_pdrop=dropout,
                         embd_pdrop=dropout, attn_pdrop=dropout, bos_token_id=None,
                         eos_token_id=None, pad_token_id=0)
        self.model = GPT2LMHeadModel(cfg).to(self.device)
        self.opt = torch.optim.AdamW(self.model.parameters(), lr=lr)
        self.processors = LogitsProcessorList([_ban_processor_class()()])
        self.autocast_dtype = torch.bfloat16 if dtype == 'bfloat16' else None
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.info = {
            'torch_version': torch.__version__,
            'transformers_version': __import__('transformers').__version__,
            'device': str(self.device),
            'device_name': (torch.cuda.get_device_name(self.device) if self.device.type == 'cuda'
                            else 'cpu'),
            'torch_threads': torch.get_num_threads(),
            'dtype': dtype,
            'tf32': (bool(torch.backends.cuda.matmul.allow_tf32) if self.device.type == 'cuda'
                     else None),
            'attn_implementation': getattr(self.model.config, '_attn_implementation', None),
            'num_params': int(self.num_params),
            'model': f'GPT2LMHeadModel(vocab={self.vocab_size}, n_positions={history + T}, '
                     f'n_embd={width}, n_layer={layers}, n_head={heads}, n_inner={mlp_dim})',
            'optimizer': f'torch.optim.AdamW(lr={lr})',
            'generate': f'generate(num_beams={beam}, max_new_tokens={T}, do_sample=False, '
                        'num_return_sequences=1, logits_processor=[BanSeenItems])',
        }

    def _sync(self):
        if self.device.type == 'cuda':
            self.torch.cuda.synchronize(self.device)

    def _autocast(self):
        import contextlib
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return self.torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def train_step_fn(self, sequences) -> Callable[[], Any]:
        """One optimizer step on [B, history + T] item ids (numpy), next-item loss on every position."""
        torch = self.torch
        ids = torch.as_tensor(sequences, dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)

        def step():
            self.model.train()
            self.opt.zero_grad(set_to_none=True)
            with self._autocast():
                loss = self.model(input_ids=ids, attention_mask=mask, labels=ids).loss
            loss.backward()
            self.opt.step()
            self._sync()
            return loss
        return step

    def generate_fn(self, histories) -> Callable[[], Any]:
        """Beam search for [B, history] item ids (numpy) -> [B, T] generated items."""
        torch = self.torch
        ids = torch.as_tensor(histories, dtype=torch.long, device=self.device)
        mask = torch.ones_like(ids)
        L = ids.shape[1]

        def gen():
            self.model.eval()
            with torch.no_grad(), self._autocast():
                out = self.model.generate(ids, attention_mask=mask, num_beams=self.beam,
                                          max_new_tokens=self.T, do_sample=False,
                                          num_return_sequences=1, logits_processor=self.processors)
            self._sync()
            return out[:, L:]
        return gen


def _candidate_processor_class():
    import torch
    from transformers import LogitsProcessor

    class OnlyCandidates(LogitsProcessor):
        """Sets -inf for every item outside the user's candidate list (the sampled protocol).
        `allowed` is [B, V] bool; rows of input_ids are user-major, `rows` per user."""

        def __init__(self, allowed):
            self.allowed = allowed

        def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor):
            rows = scores.shape[0] // self.allowed.shape[0]
            allowed = self.allowed.repeat_interleave(rows, dim=0)
            return scores.masked_fill(~allowed, float('-inf'))

    return OnlyCandidates


def generate_strategy_fn(peer: 'PeerGPT2', histories, *, strategy: str, candidates=None,
                         num_sequences: int = 20) -> Callable[[], Any]:
    """[B, T] lists of `peer` for [B, history] item ids (numpy) by HF `generate`:
    'beam' (num_beams = peer.beam), 'greedy' (num_beams = 1, do_sample=False) or 'multi'
    (do_sample=True, top_k=0, num_return_sequences=num_sequences, then reciprocal rank
    aggregation and top-T in torch, as our decoding.multi_sequence 'rra'). `candidates` [B, C]
    (numpy) restricts generation to those items (a second logits processor)."""
    torch = peer.torch
    from transformers import LogitsProcessorList
    ids = torch.as_tensor(histories, dtype=torch.long, device=peer.device)
    mask = torch.ones_like(ids)
    L, T, V = ids.shape[1], peer.T, peer.vocab_size
    procs = [_ban_processor_class()()]
    if candidates is not None:
        c = torch.as_tensor(candidates, dtype=torch.long, device=peer.device)
        allowed = torch.zeros((ids.shape[0], V), dtype=torch.bool, device=peer.device)
        allowed.scatter_(1, c, True)
        procs.append(_candidate_processor_class()(allowed))
    procs = LogitsProcessorList(procs)
    if strategy == 'beam':
        kw = dict(num_beams=peer.beam, do_sample=False, num_return_sequences=1)
    elif strategy == 'greedy':
        kw = dict(num_beams=1, do_sample=False, num_return_sequences=1)
    elif strategy == 'multi':
        kw = dict(num_beams=1, do_sample=True, top_k=0, top_p=1.0, temperature=1.0,
                  num_return_sequences=num_sequences)
    else:
        raise ValueError(f'unknown strategy {strategy!r}')
    weights = 1.0 / torch.arange(1, T + 1, dtype=torch.float32, device=peer.device)

    def gen():
        peer.model.eval()
        with torch.no_grad(), peer._autocast():
            out = peer.model.generate(ids, attention_mask=mask, max_new_tokens=T,
                                      logits_processor=procs, **kw)[:, L:]
            if strategy == 'multi':
                out = out.reshape(ids.shape[0], num_sequences * T)
                scores = torch.zeros((ids.shape[0], V), device=peer.device)
                scores.scatter_add_(1, out, weights.repeat(num_sequences).expand_as(out).contiguous())
                scores[:, 0] = float('-inf')
                out = torch.topk(scores, T, dim=1).indices
        peer._sync()
        return out
    return gen


def timed(fn: Callable[[], Any]) -> float:
    """Seconds of one call (the callables synchronise the device themselves)."""
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0
