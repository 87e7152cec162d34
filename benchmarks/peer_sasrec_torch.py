"""The PyTorch peer of the SASRec benchmark: SASRec as pmixer/SASRec.pytorch writes it.

github.com/pmixer/SASRec.pytorch, `model.py` + `main.py` + `utils.py` (the widely used PyTorch
port of Kang & McAuley's TF code):

  log2feats:  E = item_emb(seq) * sqrt(d) + pos_emb(0..L-1);  dropout;  E *= ~timeline_mask
              num_blocks times:
                  Q = LayerNorm(x)
                  x = Q + MultiheadAttention(Q, x, x, attn_mask = causal)   (torch.nn.MultiheadAttention,
                                                                          time-major, with out_proj)
                  x = LayerNorm(x)
                  x = x + FFN(x)       Conv1d(d, d, 1) -> dropout -> ReLU -> Conv1d(d, d, 1) -> dropout
                  x *= ~timeline_mask
              h = LayerNorm(x)
  forward:    pos_logits = (h * item_emb(pos)).sum(-1), neg_logits likewise (training)
  predict:    h[:, -1] @ item_emb(item_indices)^T  (inference; pmixer's evaluate calls it once per
              user, `model.predict(*[np.array(l) for l in [[u], [seq], item_idx]])`)
  training:   BCEWithLogitsLoss on the positions with pos != 0, one negative per position,
              torch.optim.Adam(lr=1e-3, betas=(0.9, 0.98)).

Timed callables (each ends with a device sync on CUDA):

* `train_step_fn(batches)`: one Adam step of pmixer's loop on a pre-sampled (seq, pos, neg) batch
  (pmixer samples in a separate process, so sampling is not timed here); the numpy arrays are
  turned into LongTensors inside the model, as pmixer does.
* `eval_per_user_fn(histories, banned)`: pmixer's evaluation made full-ranking: for every user,
  one `model.predict(u, seq, item_indices = all N items)` call, the user's history set to -inf,
  `torch.topk(10)`. One model call per user.
* `eval_batched_fn(histories, banned)`: the same computation batched: `log2feats` on [B, L],
  [B, D] @ item_emb^T, a scatter of -inf over each row's history, `torch.topk`.

In the peer's favour: evaluation runs under `torch.no_grad()` (the classic pmixer main.py calls
`evaluate` without it), the
per-user sequences, item index array and history tensors are built once before timing, and the
`l2_emb * norm(item_emb)` term is left out when l2_emb is 0 (pmixer adds it even then).

torch is imported lazily: the benchmark runs without it (`--peer off`, or auto when it is missing).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Sequence

import numpy as np


def availability() -> tuple[bool, str]:
    """(True, version) when torch imports, else (False, the reason)."""
    try:
        import torch
    except Exception as e:  # ImportError, or a broken install
        return False, f'torch not importable: {type(e).__name__}: {e}'
    return True, f'torch {torch.__version__}'


def _model_classes():
    import torch

    class PointWiseFeedForward(torch.nn.Module):
        def __init__(self, hidden_units, dropout_rate):
            super().__init__()
            self.conv1 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout1 = torch.nn.Dropout(p=dropout_rate)
            self.relu = torch.nn.ReLU()
            self.conv2 = torch.nn.Conv1d(hidden_units, hidden_units, kernel_size=1)
            self.dropout2 = torch.nn.Dropout(p=dropout_rate)

        def forward(self, inputs):
            outputs = self.dropout2(self.conv2(self.relu(self.dropout1(
                self.conv1(inputs.transpose(-1, -2))))))
            outputs = outputs.transpose(-1, -2)   # Conv1d wants (N, C, Length)
            outputs += inputs
            return outputs

    class SASRec(torch.nn.Module):
        """pmixer's SASRec (model.py), with the sizes passed explicitly instead of `args`."""

        def __init__(self, item_num, hidden_units, maxlen, num_blocks, num_heads, dropout_rate,
                     device):
            super().__init__()
            self.item_num = item_num
            self.dev = device
            self.item_emb = torch.nn.Embedding(item_num + 1, hidden_units, padding_idx=0)
            self.pos_emb = torch.nn.Embedding(maxlen, hidden_units)
            self.emb_dropout = torch.nn.Dropout(p=dropout_rate)
            self.attention_layernorms = torch.nn.ModuleList()
            self.attention_layers = torch.nn.ModuleList()
            self.forward_layernorms = torch.nn.ModuleList()
            self.forward_layers = torch.nn.ModuleList()
            self.last_layernorm = torch.nn.LayerNorm(hidden_units, eps=1e-8)
            for _ in range(num_blocks):
                self.attention_layernorms.append(torch.nn.LayerNorm(hidden_units, eps=1e-8))
                self.attention_layers.append(
                    torch.nn.MultiheadAttention(hidden_units, num_heads, dropout_rate))
                self.forward_layernorms.append(torch.nn.LayerNorm(hidden_units, eps=1e-8))
                self.forward_layers.append(PointWiseFeedForward(hidden_units, dropout_rate))

        def _ids(self, x):
            if isinstance(x, torch.Tensor):
                return x.to(self.dev)
            return torch.LongTensor(x).to(self.dev)

        def log2feats(self, log_seqs):
            ids = self._ids(log_seqs)
            seqs = self.item_emb(ids)
            seqs *= self.item_emb.embedding_dim ** 0.5
            positions = torch.arange(ids.shape[1], device=self.dev).expand(ids.shape[0], -1)
            seqs += self.pos_emb(positions)
            seqs = self.emb_dropout(seqs)
            timeline_mask = ids == 0
            seqs *= ~timeline_mask.unsqueeze(-1)
            tl = seqs.shape[1]
            attention_mask = ~torch.tril(torch.ones((tl, tl), dtype=torch.bool, device=self.dev))
            for i in range(len(self.attention_layers)):
                seqs = torch.transpose(seqs, 0, 1)
                Q = self.attention_layernorms[i](seqs)
                mha_outputs, _ = self.attention_layers[i](Q, seqs, seqs, attn_mask=attention_mask)
                seqs = Q + mha_outputs
                seqs = torch.transpose(seqs, 0, 1)
                seqs = self.forward_layernorms[i](seqs)
                seqs = self.forward_layers[i](seqs)
                seqs *= ~timeline_mask.unsqueeze(-1)
            return self.last_layernorm(seqs)

        def forward(self, user_ids, log_seqs, pos_seqs, neg_seqs):    # training
            log_feats = self.log2feats(log_seqs)
            pos_embs = self.item_emb(self._ids(pos_seqs))
            neg_embs = self.item_emb(self._ids(neg_seqs))
            return (log_feats * pos_embs).sum(dim=-1), (log_feats * neg_embs).sum(dim=-1)

        def predict(self, user_ids, log_seqs, item_indices):          # inference
            log_feats = self.log2feats(log_seqs)
            final_feat = log_feats[:, -1, :]
            item_embs = self.item_emb(self._ids(item_indices))       # (I, C)
            return item_embs.matmul(final_feat.unsqueeze(-1)).squeeze(-1)

    return SASRec


class PeerSASRec:
    """pmixer's SASRec sized like ours, with timed callables for training and evaluation."""

    def __init__(self, *, num_items: int, embed_dim: int, maxlen: int, num_blocks: int,
                 num_heads: int, dropout: float, lr: float = 1e-3, l2_emb: float = 0.0, k: int = 10,
                 device: str = 'cpu', matmul_precision: str = 'default', seed: int = 0):
        import torch
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
        self.num_items, self.k, self.l2_emb = int(num_items), int(k), float(l2_emb)
        model_cls = _model_classes()
        self.model = model_cls(num_items, embed_dim, maxlen, num_blocks, num_heads, dropout,
                               self.device).to(self.device)
        # pmixer's main.py: xavier_normal_ on every parameter that allows it (the rest keep torch's init)
        for _, param in self.model.named_parameters():
            try:
                torch.nn.init.xavier_normal_(param.data)
            except Exception:
                pass
        self.model.pos_emb.weight.data[0, :] = 0
        self.model.item_emb.weight.data[0, :] = 0
        self.bce = torch.nn.BCEWithLogitsLoss()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr, betas=(0.9, 0.98))
        self.num_params = sum(p.numel() for p in self.model.parameters())
        self.all_items = np.arange(1, num_items + 1)            # pmixer's item_idx, full ranking
        self.info = {
            'torch_version': torch.__version__,
            'device': str(self.device),
            'device_name': (torch.cuda.get_device_name(self.device) if self.device.type == 'cuda'
                            else 'cpu'),
            'torch_threads': torch.get_num_threads(),
            'tf32': (bool(torch.backends.cuda.matmul.allow_tf32) if self.device.type == 'cuda'
                     else None),
            'num_params': int(self.num_params),
            'model': f'pmixer SASRec(items={num_items}, hidden_units={embed_dim}, maxlen={maxlen}, '
                     f'num_blocks={num_blocks}, num_heads={num_heads}, dropout={dropout}); '
                     'torch.nn.MultiheadAttention, Conv1d(k=1) feed-forward',
            'optimizer': f'torch.optim.Adam(lr={lr}, betas=(0.9, 0.98))',
            'loss': 'BCEWithLogitsLoss(pos_logits[pos != 0], 1) + BCEWithLogitsLoss(neg_logits[pos != 0], 0)'
                    + (f' + {l2_emb} * norm(item_emb)' if l2_emb > 0 else ''),
        }

    def _sync(self):
        if self.device.type == 'cuda':
            self.torch.cuda.synchronize(self.device)

    # ------------------------------------------------------------------ training
    def train_step_fn(self, batches: Sequence[tuple]) -> Callable[[], Any]:
        """One step of pmixer's training loop; `batches` = pre-sampled (u, seq, pos, neg) numpy
        tuples (seq/pos/neg [B, L]), used in turn."""
        torch, model, opt, bce = self.torch, self.model, self.opt, self.bce
        dev = self.device
        it = {'i': 0}

        def step():
            u, seq, pos, neg = batches[it['i'] % len(batches)]
            it['i'] += 1
            model.train()
            pos_logits, neg_logits = model(u, seq, pos, neg)
            pos_labels = torch.ones(pos_logits.shape, device=dev)
            neg_labels = torch.zeros(neg_logits.shape, device=dev)
            opt.zero_grad()
            indices = np.where(pos != 0)
            loss = bce(pos_logits[indices], pos_labels[indices])
            loss += bce(neg_logits[indices], neg_labels[indices])
            if self.l2_emb > 0:
                for param in model.item_emb.parameters():
                    loss += self.l2_emb * torch.norm(param)
            loss.backward()
            opt.step()
            self._sync()
            return loss
        return step

    # ------------------------------------------------------------------ evaluation
    def eval_per_user_fn(self, histories: np.ndarray, banned: Sequence[np.ndarray]) -> Callable[[], Any]:
        """pmixer's evaluate loop, full ranking: one `predict` call per user over all N items, the
        user's history items (`banned[u]`, ids 1..N) set to -inf, top-k. Returns [U, k] item ids."""
        torch, model, k = self.torch, self.model, self.k
        seqs = [np.asarray(h, np.int64)[None] for h in histories]           # [[seq]]
        rated = [torch.as_tensor(np.asarray(b, np.int64) - 1, device=self.device) for b in banned]
        item_idx = self.all_items

        def run():
            model.eval()
            out = []
            with torch.no_grad():
                for u in range(len(seqs)):
                    predictions = model.predict(np.array([u]), seqs[u], item_idx)[0]     # [N]
                    predictions[rated[u]] = float('-inf')
                    out.append(torch.topk(predictions, k).indices + 1)
            res = torch.stack(out)
            self._sync()
            return res
        return run

    def eval_batched_fn(self, histories: np.ndarray, banned: Sequence[np.ndarray]) -> Callable[[], Any]:
        """The same computation for all users at once: [B, L] -> [B, V] scores over the whole item
        table, -inf at padding (0) and every history item, top-k. Returns [B, k] item ids."""
        torch, model, k = self.torch, self.model, self.k
        seq = torch.as_tensor(np.asarray(histories, np.int64), device=self.device)
        width = max(1, max(len(b) for b in banned))
        ban = np.zeros((len(banned), width), np.int64)                     # 0-padded
        for i, b in enumerate(banned):
            ban[i, :len(b)] = b
        ban = torch.as_tensor(ban, device=self.device)

        def run():
            model.eval()
            with torch.no_grad():
                h = model.log2feats(seq)[:, -1, :]                           # [B, D]
                scores = h @ model.item_emb.weight.t()                       # [B, N + 1]
                scores.scatter_(1, ban, float('-inf'))                       # history, and col 0
                res = torch.topk(scores, k, dim=1).indices
            self._sync()
            return res
        return run
