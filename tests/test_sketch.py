import math
import pickle
import random

import pandas as pd
import pytest

from observatory.operators.sketch import QuantileSketch


def _lower_quantile(values, q):
    return pd.Series(values).quantile(q, interpolation="lower")


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("q", [0.5, 0.95, 0.99])
def test_quantile_within_one_percent_on_heavy_tailed_latencies(seed, q):
    rng = random.Random(seed)
    values = [rng.lognormvariate(math.log(800), 1.2) for _ in range(rng.randint(1, 5000))]
    sketch = QuantileSketch()
    for v in values:
        sketch.add(v)
    exact = _lower_quantile(values, q)
    assert abs(sketch.quantile(q) - exact) <= 0.01 * exact


def test_merged_sketches_equal_one_sketch_over_the_union():
    rng = random.Random(1)
    a, b, whole = QuantileSketch(), QuantileSketch(), QuantileSketch()
    for i in range(3000):
        v = rng.expovariate(1 / 300)
        (a if i % 3 else b).add(v)
        whole.add(v)
    a.merge(b)
    assert a.count == whole.count
    assert a.bins == whole.bins
    for q in (0.5, 0.95, 0.99):
        assert a.quantile(q) == whole.quantile(q)


def test_zeros_empty_and_pickle():
    s = QuantileSketch()
    assert s.quantile(0.5) is None
    s.add(0.0)
    s.add(0.0)
    s.add(10.0)
    assert s.quantile(0.5) == 0.0
    assert abs(s.quantile(1.0) - 10.0) <= 0.1
    clone = pickle.loads(pickle.dumps(s))
    assert clone.bins == s.bins and clone.zeros == 2 and clone.quantile(1.0) == s.quantile(1.0)


def test_merge_rejects_other_accuracy():
    with pytest.raises(ValueError):
        QuantileSketch(0.01).merge(QuantileSketch(0.005))
