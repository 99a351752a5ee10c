"""Token data for the MoE language model: a topic-Markov source with a known floor, or a text file.

Topic-Markov language (a synthetic source built for fedsim; docs/explanation/workloads.md). V tokens,
M topics; topic m owns the vocabulary slice ``[m V/M, (m+1) V/M)``. Its transition matrix is

    P_m(i, :) = (1 - leak) [(1 - mix) B_m(i, :) + mix u_m] + leak / V

with u_m a Zipf(``zipf_exponent``) unigram over the slice (random rank order), B_m a sparse bigram
matrix (every token i has ``branching`` successors in the slice, weights ~ Dir(1)) and a small
``leak`` to all V tokens so that every P_m is irreducible and aperiodic. μ_m is its stationary
distribution. UE k draws its topic mixture π_k ~ Dir(α_D 1_M); each sequence draws one topic
from π_k, starts from μ_m and runs the chain for L tokens. Token ids correlate with topics, so a
router that looks only at the token id can send each topic to "its" expert.

Floor. A next-token predictor that sees x_1..x_t (topic unknown) has cross-entropy at least
H(X_{t+1} | X_{1:t}, T) = H_T, the entropy rate of the sequence's topic:
H_m = -Σ_i μ_m(i) Σ_j P_m(i, j) log P_m(i, j). Over L - 1 predicted tokens the excess for not
knowing the topic is at most H(π)/(L - 1) nats per token. All randomness comes from the
``"data"`` stream: the source from round 0, π_k from round 1, UE k's sequences from round 2,
each keyed by UE where it belongs to one, so UE k's data does not depend on ``num_ues``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from channels.rng import numpy_generator, torch_generator


@dataclass(frozen=True)
class TopicMarkovSource:
    """The M topic chains of one seed.

    Attributes:
        P: transition matrices ``[M, V, V]`` float64, rows sum to 1.
        mu: stationary distributions ``[M, V]`` float64.
        entropy_rate: H_m ``[M]`` nats per token.
        stationary_entropy: H(μ_m) ``[M]`` nats.
    """

    P: np.ndarray
    mu: np.ndarray
    entropy_rate: np.ndarray
    stationary_entropy: np.ndarray

    @property
    def num_topics(self) -> int:
        return self.P.shape[0]

    @property
    def vocab_size(self) -> int:
        return self.P.shape[1]


def _stationary(P: np.ndarray) -> np.ndarray:
    """Stationary distribution of an irreducible row-stochastic ``P [V, V]``: solve μ(P - I) = 0, Σμ = 1."""
    V = P.shape[0]
    A = np.vstack([P.T - np.eye(V), np.ones((1, V))])
    b = np.zeros(V + 1)
    b[-1] = 1.0
    mu = np.linalg.lstsq(A, b, rcond=None)[0]
    mu = np.clip(mu, 0.0, None)
    return mu / mu.sum()


def entropy_rate(P: np.ndarray, mu: np.ndarray) -> float:
    """H = -Σ_i μ(i) Σ_j P(i, j) log P(i, j) in nats, for ``P [V, V]``, ``mu [V]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        plogp = np.where(P > 0, P * np.log(P), 0.0)
    return float(-(mu * plogp.sum(1)).sum())


def shannon_entropy(p: np.ndarray) -> float:
    """H(p) in nats for a probability vector ``p [K]``."""
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def make_source(seed: int, vocab_size: int, num_topics: int, branching: int, zipf_exponent: float,
                unigram_mix: float, leak: float) -> TopicMarkovSource:
    """Build the topic chains from ``numpy_generator(seed, "data", 0)``."""
    V, M = vocab_size, num_topics
    width = V // M
    if width < branching:
        raise ValueError(f"vocab_size // num_topics = {width} is smaller than branching = {branching}")
    rng = numpy_generator(seed, "data", 0)
    P = np.empty((M, V, V))
    for m in range(M):
        lo = m * width
        ranks = rng.permutation(width) + 1
        u = np.zeros(V)
        u[lo : lo + width] = ranks.astype(float) ** (-zipf_exponent)
        u /= u.sum()
        B = np.zeros((V, V))
        for i in range(V):
            succ = lo + rng.choice(width, size=branching, replace=False)
            B[i, succ] = rng.dirichlet(np.ones(branching))
        P[m] = (1 - leak) * ((1 - unigram_mix) * B + unigram_mix * u) + leak / V
        P[m] /= P[m].sum(1, keepdims=True)
    mu = np.stack([_stationary(P[m]) for m in range(M)])
    rates = np.array([entropy_rate(P[m], mu[m]) for m in range(M)])
    h_mu = np.array([shannon_entropy(mu[m]) for m in range(M)])
    return TopicMarkovSource(P=P, mu=mu, entropy_rate=rates, stationary_entropy=h_mu)


def topic_mixture(seed: int, ue: int, num_topics: int, alpha: float) -> np.ndarray:
    """π_k ~ Dir(α 1_M) for UE ``ue``, ``[M]``, from ``numpy_generator(seed, "data", 1, ue)``."""
    return numpy_generator(seed, "data", 1, ue).dirichlet(np.full(num_topics, alpha))


def sample_sequences(src: TopicMarkovSource, pi: np.ndarray, n: int, length: int,
                     generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` sequences of ``length`` tokens: ``(tokens [n, L] int64, topics [n] int64)``.

    Each sequence draws a topic from ``pi [M]``, its first token from μ_topic, then runs P_topic.
    """
    # inverse-CDF sampling: one uniform per token, batched over sequences
    cdf = torch.from_numpy(src.P).cumsum(-1)
    cdf[..., -1] = 1.0 + 1e-12  # guard the last bin against rounding
    cdf_mu = torch.from_numpy(src.mu).cumsum(-1)
    cdf_mu[..., -1] = 1.0 + 1e-12
    topics = torch.multinomial(torch.from_numpy(pi), n, replacement=True, generator=generator)
    u = torch.rand(length, n, 1, generator=generator, dtype=torch.float64)
    x = torch.empty(n, length, dtype=torch.int64)
    x[:, 0] = (cdf_mu[topics] < u[0]).sum(1)  # = searchsorted, but much faster for small V
    for t in range(1, length):
        x[:, t] = (cdf[topics, x[:, t - 1]] < u[t]).sum(1)
    return x, topics


def ue_sequences(src: TopicMarkovSource, seed: int, ue: int, pi: np.ndarray, n: int,
                 length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """UE ``ue``'s ``n`` sequences from ``torch_generator(seed, "data", 2, ue)``."""
    return sample_sequences(src, pi, n, length, torch_generator(seed, "data", 2, ue))


def load_char_corpus(path: str | Path) -> tuple[torch.Tensor, list[str]]:
    """A UTF-8 text file tokenised by characters: ``(ids [n_chars] int64, vocab)``.

    The vocabulary is the sorted set of characters in the file, so ids are stable for a file.
    """
    text = Path(path).read_text(encoding="utf-8")
    vocab = sorted(set(text))
    index = {c: i for i, c in enumerate(vocab)}
    return torch.tensor([index[c] for c in text], dtype=torch.int64), vocab


def split_corpus(
    ids: torch.Tensor, num_ues: int, length: int, test_fraction: float
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Cut ``ids`` into non-overlapping sequences of ``length``, deal contiguous blocks to UEs
    (so UEs see different parts of the text), and keep the last ``test_fraction`` of each block as
    that UE's test sequences. Returns per UE ``(train [n_k, L], test [m_k, L])``."""
    n_seq = len(ids) // length
    if n_seq < 2 * num_ues:
        raise ValueError(f"the text has {n_seq} sequences of {length} characters; need at least {2 * num_ues}")
    seqs = ids[: n_seq * length].view(n_seq, length)
    out = []
    for block in torch.tensor_split(seqs, num_ues):
        n_test = max(1, round(test_fraction * len(block)))
        out.append((block[:-n_test], block[-n_test:]))
    return out
