"""The training config: one typed dataclass, loaded from a YAML recipe plus command-line overrides."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Annotated, Literal

from tinyminds.config import Range, check_ranges
from tinyminds.errors import UserError


@dataclass
class TrainConfig:
    """Everything one training run needs. A recipe YAML sets some fields; the rest keep these defaults."""

    model: str
    """Zoo name of the architecture trained from scratch (see `tinyminds models`)."""
    data: str = ""
    """Prepared data folder written by `tinyminds prepare` (required at run time)."""
    out: str = ""
    """Run folder for config, metrics, checkpoints and the final model (default: runs/RECIPE)."""
    recipe: str = ""
    """Name of the recipe this config came from (set by the loader)."""
    description: str = ""
    """One line saying what the recipe is (shown by `tinyminds recipes`)."""
    init_from: str | None = None
    """Start from this Hugging Face model folder instead of random weights; its tokenizer must match."""
    seed: Annotated[int, Range(0)] = 42
    """Seeds weight initialisation, dropout and the per-epoch chunk permutations."""
    epochs: Annotated[int, Range(1)] = 1
    """Passes over the training chunks."""
    batch_size: Annotated[int, Range(1)] = 32
    """Chunks per micro-batch, summed over all data-parallel processes."""
    grad_accum: Annotated[int, Range(1)] = 1
    """Micro-batches per optimizer step (effective batch = batch_size x grad_accum)."""
    lr: Annotated[float, Range(0, low_open=True)] = 3e-4
    """Peak learning rate of AdamW."""
    weight_decay: Annotated[float, Range(0)] = 0.0
    """AdamW weight decay, applied to matrices only (not to biases and norm weights)."""
    adam_beta1: Annotated[float, Range(0, 1, high_open=True)] = 0.9
    """AdamW beta1."""
    adam_beta2: Annotated[float, Range(0, 1, high_open=True)] = 0.999
    """AdamW beta2."""
    adam_eps: Annotated[float, Range(0, low_open=True)] = 1e-8
    """AdamW epsilon."""
    warmup_steps: Annotated[int, Range(0)] = 0
    """Optimizer steps of linear warm-up before the cosine decay."""
    min_lr_ratio: Annotated[float, Range(0, 1)] = 0.0
    """The cosine decays to lr x min_lr_ratio at the last step."""
    grad_clip: Annotated[float, Range(0)] = 1.0
    """Clip the global gradient norm to this value (0 turns clipping off)."""
    precision: Literal["auto", "fp32", "bf16", "fp16"] = "auto"
    """auto: bf16 autocast on a GPU that has it (else fp16), fp32 on the CPU."""
    device: str = "auto"
    """auto, cpu, cuda or cuda:N (under torchrun each process takes cuda:LOCAL_RANK)."""
    compile: bool = False
    """Wrap the model in torch.compile."""
    max_steps: Annotated[int, Range(0)] = 0
    """Stop after this many optimizer steps (0: run all epochs); the schedule is fitted to it."""
    eval_chunks: Annotated[int, Range(0)] = 8192
    """Size of the fixed, seeded subset of dev chunks used for validation (0: all)."""
    eval_batch_size: Annotated[int, Range(1)] = 64
    """Chunks per validation batch (summed over processes)."""
    eval_every: Annotated[int, Range(0)] = 0
    """Also validate every this many optimizer steps (0: only at each epoch's end). These points
    give the learning curves; the exported model is still chosen at epoch ends."""
    eval_seed: Annotated[int, Range(0)] = 1234
    """Seed of the validation subset; fixed so that every model is validated on the same chunks."""
    checkpoint_every: Annotated[int, Range(0)] = 500
    """Write a resumable checkpoint every this many optimizer steps (0: at epoch ends only)."""
    keep_checkpoints: Annotated[int, Range(1)] = 2
    """How many of the newest checkpoints to keep."""
    milestones: Literal["none", "babylm-2025", "custom"] = "none"
    """Save a model folder RUN/milestones/chck_{N}M when the words seen (repeats counted) first reach N million: none; babylm-2025 (every 1M words to 10M, then every 10M to 100M, the 2025 pipeline's checkpoints); custom (milestone_words). Score them with `tinyminds trajectory RUN`."""
    milestone_words: list[Annotated[float, Range(0, low_open=True)]] = field(default_factory=list)
    """milestones=custom: the milestones in millions of words, e.g. [0.5, 1, 2]."""
    log_every: Annotated[int, Range(1)] = 10
    """Write a metrics line every this many optimizer steps."""
    tensorboard: bool = False
    """Also log to RUN/tensorboard (needs the tensorboard package)."""
    wandb: bool = False
    """Also log to Weights & Biases (needs the wandb package)."""
    wandb_project: str = "tinyminds"
    """W&B project name."""
    mask_prob: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.15
    """Masked LMs (electra-*) only: share of positions selected for prediction (80% become [MASK], 10% a random token, 10% stay)."""

    def __post_init__(self) -> None:
        check_ranges(self)
        if self.milestones == "custom" and not self.milestone_words:
            raise UserError("milestones=custom needs milestone_words (millions of words, e.g. 1,2)")
        if self.milestone_words and self.milestones != "custom":
            raise UserError(
                f"milestone_words is used with milestones=custom, not {self.milestones}"
            )

    @property
    def effective_batch(self) -> int:
        return self.batch_size * self.grad_accum


@dataclass
class DistillConfig(TrainConfig):
    """A training run whose loss distills an ensemble of teachers into the student (SPEC §3)."""

    teachers: list[str] = field(default_factory=list)
    """Teacher model folders (from `tinyminds train`, or any Hugging Face causal LM) sharing the data's tokenizer."""
    teacher_weights: list[Annotated[float, Range(0)]] = field(default_factory=list)
    """Weight of each teacher in the ensemble (empty: equal weights)."""
    ensemble: Literal["logits", "probs"] = "logits"
    """logits: average the teachers' logits before the softmax (BabyLlama); probs: average their probabilities."""
    alpha: Annotated[float, Range(0, 1)] = 0.5
    """Weight of the student's cross-entropy; the KL term gets 1 - alpha (times T^2)."""
    temperature: Annotated[float, Range(0, low_open=True)] = 2.0
    """Softmax temperature T of both distributions in the KL term."""
    kl_direction: Literal["forward", "reverse"] = "forward"
    """forward: KL(teacher || student) (BabyLlama); reverse: KL(student || teacher) (the older spelling of divergence=reverse_kl)."""
    divergence: Literal["forward_kl", "reverse_kl", "skew_kl", "skew_reverse_kl", "jsd", "taid"] = (
        "forward_kl"
    )
    """What the KD term measures between the teachers' p and the student's q (both at T; `training/objectives/divergences.py` has the formulas): forward_kl KL(p||q) (BabyLlama); reverse_kl KL(q||p); skew_kl KL(p||a p+(1-a) q) and skew_reverse_kl KL(q||a q+(1-a) p) (DistiLLM, a = skew_alpha); jsd b KL(p||m)+(1-b) KL(q||m), m = b p+(1-b) q (GKD/TRL, b = jsd_beta: small b forward-like); taid KL(p_t||q), p_t = softmax((1-t) sg(log q)+t log p) with t rising from taid_t_start (TAID, objective=kd only). A sampled cache serves forward_kl and skew_kl; the top-k cache (bucket tail) serves all."""
    skew_alpha: Annotated[float, Range(0, 1, high_open=True)] = 0.1
    """skew_kl, skew_reverse_kl: the share a of the distribution's own side in the mixture (DistiLLM: 0.1)."""
    jsd_beta: Annotated[float, Range(0, 1, low_open=True, high_open=True)] = 0.5
    """jsd: the weight b of the teachers in the mixture m (TRL's beta; 0.5 is the plain JSD)."""
    taid_t_start: Annotated[float, Range(0, 1, high_open=True)] = 0.4
    """taid: the interpolation t at the first step (TAID: 0.4)."""
    taid_t_end: Annotated[float, Range(0, 1, low_open=True)] = 1.0
    """taid: the largest t (1: the teachers alone)."""
    taid_momentum: Annotated[float, Range(0, 1, high_open=True)] = 0.99
    """taid: momentum of the relative change of the loss that speeds t up (TAID: 0.99)."""
    taid_step: Annotated[float, Range(0, 1)] = 5e-4
    """taid: the adaptive step of t per training step, times sigmoid(momentum) (1 - t) (TAID: 5e-4)."""
    kl_reduction: Literal["sequence", "token"] = "sequence"
    """sequence: KL summed over the 128 positions and averaged over sequences (BabyLlama's batchmean, ~128x a per-token KL); token: mean per token."""
    teacher_cache: bool = True
    """Compute the teachers' ensemble once over the training chunks and read it every epoch (k tokens per position; with objective=contrastive also each teacher's representation of each chunk)."""
    cache_k: Annotated[int, Range(1)] = 128
    """Tokens stored per position in the teacher cache (4k + 4 bytes per token: 516 MB per million tokens at 128)."""
    cache_selection: Literal["topk", "sample", "hybrid"] = "sample"
    """sample: k tokens drawn from the teachers' distribution (an unbiased forward-KL gradient however flat the teachers are; forward KL only; with k = 128 the student ended within 1% of online KD on babylm-mini); topk: the k most likely tokens plus one bucket for the rest of the mass (3.4% worse there at k = 32: the student's tail is left free); hybrid: the k/2 most likely tokens exactly plus k/2 draws from the rest (forward KL only)."""
    cache_tail: Literal["bucket", "uniform"] = "bucket"
    """With cache_selection=topk, how the KL treats the teachers' mass outside the top k: bucket: one bucket against the student's own mass there (its tail's shape is left free); uniform: that mass spread evenly over the other tokens (a dense KL against top-k + flat tail; forward KL only). The cache itself is the same."""
    cache_dir: str = ""
    """Where the teacher cache lives (default: DATA/teacher-cache/KEY, shared by every run with the same teachers)."""
    cache_batch_size: Annotated[int, Range(1)] = 64
    """Chunks per teacher forward pass while building the cache or running teachers online for validation."""
    objective: Literal["kd", "contrastive", "mate"] = "kd"
    """kd: alpha * CE + (1 - alpha) * T^2 * KL (BabyLlama); contrastive: ce_weight * CE + kd_weight * T^2 * KL + contrastive_weight * N-pair (ContrastiveLlama-58M); mate: MATE-KD, a masked-LM generator perturbs the text adversarially and the student also distills on the perturbed text (MaskedAdversarialLlama-58M). With teacher_cache=true the contrastive objective reads the teachers' ensemble and their per-chunk representations from the cache (no teacher runs in training), and mate reads its KD term on the original text from it (the teachers still score the perturbed text)."""
    ce_weight: Annotated[float, Range(0)] = 0.39
    """objective=contrastive: weight of the student's cross-entropy (paper: 0.39)."""
    kd_weight: Annotated[float, Range(0)] = 0.39
    """objective=contrastive: weight of the T^2-scaled KL to the teachers' ensemble (paper: 0.39)."""
    contrastive_weight: Annotated[float, Range(0)] = 0.22
    """objective=contrastive: weight of the N-pair (InfoNCE) term (paper: 0.22; the authors' code used 0.1 through a bug)."""
    contrastive_representation: Literal["hidden", "logits"] = "hidden"
    """objective=contrastive: hidden: mean-pooled last hidden states, the student's mapped to each teacher's width by a learned linear projection (the paper's text); logits: sequence-averaged logits, no projection (the authors' code)."""
    contrastive_similarity: Literal["cosine", "dot"] = "cosine"
    """objective=contrastive: similarity of two representations: cosine (InfoNCE) or the plain dot product (Sohn's N-pair loss)."""
    contrastive_temperature: Annotated[float, Range(0, low_open=True)] = 0.1
    """objective=contrastive: the similarities are divided by this before the softmax over the batch (not given by the paper; chosen here)."""
    generator: str = ""
    """objective=mate: the generator's model folder, a masked LM trained by `tinyminds train electra-tiny` / `electra-56m` on the same data (vocabulary = the data's plus [MASK])."""
    generator_steps: Annotated[int, Range(0)] = 10
    """objective=mate: generator (maximisation) steps in each round, run before the round's student steps (paper: 10)."""
    student_steps: Annotated[int, Range(1)] = 100
    """objective=mate: student (minimisation) optimizer steps in each round (paper: 100). Generator steps read the batches of the round's first student steps and do not count against epochs or max_steps."""
    mask_fraction: Annotated[float, Range(0, 1, low_open=True)] = 0.3
    """objective=mate: share of the non-pad tokens masked and refilled by the generator (paper: 30%)."""
    gumbel_tau: Annotated[float, Range(0, low_open=True)] = 1.0
    """objective=mate: temperature of the generator's Gumbel-softmax sample, whose straight-through gradient trains it (paper: 1)."""
    generator_lr: Annotated[float, Range(0)] = 5e-7
    """objective=mate: learning rate of the generator's own AdamW (constant, no weight decay; paper: 5e-7; 0 freezes the generator)."""
    generator_grad_clip: Annotated[float, Range(0)] = 5.0
    """objective=mate: clip the generator's gradient norm to this value (0 turns clipping off; paper: 5). The student's is grad_clip."""
    mate_ce_weight: Annotated[float, Range(0)] = 1.0
    """objective=mate: relative weight of the student's CE; the loss is (w_ce CE + w_kd T^2 KL_orig + w_adv T^2 KL_adv) / (w_ce + w_kd + w_adv), so equal weights give the paper's CE/3 + KD_orig/3 + KD_adv/3."""
    mate_kd_weight: Annotated[float, Range(0)] = 1.0
    """objective=mate: relative weight of the KD term on the original text (T^2 KL, as the kd objective's)."""
    mate_adv_weight: Annotated[float, Range(0)] = 1.0
    """objective=mate: relative weight of the KD term on the generator's perturbed text."""
