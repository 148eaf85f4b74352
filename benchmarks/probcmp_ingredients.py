"""``probcmp_small`` without one ingredient of its recipe each, to measure what each contributes.

    python benchmarks/accuracy.py --plugin probcmp_ingredients --model probcmp_small-no_jitter

Every variant is ``probcmp_small`` with one switch of ``sota.ProbCmpBase`` turned off;
``probcmp`` vs ``probcmp_small`` measures the ensemble.
"""

from digitcmp.models import register
from digitcmp.sota import ProbCmpSmall

OFF = {"no_jitter": {"use_jitter": False}, "no_pair_loss": {"pair_loss": False},
       "no_smoothing": {"label_smoothing": 0.0}, "no_one_cycle": {"one_cycle": False}}

for suffix, switches in OFF.items():
    name = f"probcmp_small-{suffix}"
    register(name)(type(name, (ProbCmpSmall,), {
        **switches, "label": f"ProbCmp small, {suffix.replace('_', ' ')}",
        "description": f"probcmp_small with {', '.join(switches)} off"}))
