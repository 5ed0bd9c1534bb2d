"""Your own method, an example (docs/your-own-method.md): KD plus `1 - cos(h_S^i, h_T^g(i))` between each student
layer's [CLS] state and that of its PKD-skip teacher layer g(i) (every student layer, the last included), weighted
like PKD's term by `distill.pkd_beta`. List `cls_cosine` in `distill.methods` to run it beside the built-in ones."""
import torch.nn.functional as F

from alpkd.methods import CE, KD, Method, Term
from alpkd.students import skip_layers


def cosine(batch, p):
    """Mean over examples and layers of 1 - cos(h_S^i, h_T^g(i)); the teacher's states are constants."""
    layers = skip_layers(batch.n, batch.m)
    student = batch.student_states.float()  # (B, m, d): the [CLS] state of each student layer
    teacher = batch.teacher_states[:, layers].detach().float()  # (B, m, d): teacher layer g(i) for each
    return (1 - F.cosine_similarity(student, teacher, dim=-1)).mean()


METHOD = Method(
    name="cls_cosine",  # the file's name
    label="CLS-cosine",  # in the report's tables and figures
    family="layer",  # baseline | alp | layer | control | assisted: where the report places it
    terms=(CE, KD, Term("cos", cosine, weight=lambda p: p.pkd_beta)),  # total: (1-a) CE + a KD + b cos
    style=dict(color="tab:gray", linestyle="-", marker="p"),
    states=True,  # reads the layers' [CLS] states
    mapping=lambda n, m, p, seed=0, epoch=0: skip_layers(n, m),  # the records' layer pairs
    compared_with=("nokd", "kd", "pkd"),  # the report's adjusted comparisons
)
