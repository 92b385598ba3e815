"""How well one measure predicts another over a set of runs: Spearman's rank correlation and the R² of a
straight-line fit, each with a bootstrap interval over the runs (pure Python: no SciPy on these machines)."""
import math
import random
import statistics


def ranks(values):
    """Average ranks (1-based), ties sharing the mean of the ranks they span."""
    order = sorted(range(len(values)), key=lambda i: values[i])
    result = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):
            result[order[position]] = (start + end) / 2 + 1
        start = end + 1
    return result


def pearson(xs, ys):
    """Pearson's r; nan when either side is constant or there are fewer than 2 points."""
    if len(xs) != len(ys):
        raise ValueError(f"{len(xs)} x values but {len(ys)} y values")
    if len(xs) < 2:
        return float("nan")
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxy = math.fsum((x - mx) * (y - my) for x, y in zip(xs, ys))
    sxx = math.fsum((x - mx) ** 2 for x in xs)
    syy = math.fsum((y - my) ** 2 for y in ys)
    if sxx == 0 or syy == 0:
        return float("nan")
    return sxy / math.sqrt(sxx * syy)


def spearman(xs, ys):
    """Spearman's rho: Pearson's r of the ranks."""
    return pearson(ranks(xs), ranks(ys))


def r_squared(xs, ys):
    """R² of the least-squares line y = a + b x (for one predictor, Pearson's r squared)."""
    r = pearson(xs, ys)
    return r * r


def bootstrap_interval(statistic, xs, ys, resamples=2000, level=0.9, seed=0):
    """(low, high) percentile interval of statistic(xs, ys) over resamples of the runs with replacement;
    resamples where the statistic is undefined (a constant side) are left out."""
    rng = random.Random(seed)
    n, values = len(xs), []
    for _ in range(resamples):
        picks = [rng.randrange(n) for _ in range(n)]
        value = statistic([xs[i] for i in picks], [ys[i] for i in picks])
        if not math.isnan(value):
            values.append(value)
    if not values:
        return float("nan"), float("nan")
    values.sort()
    tail = (1 - level) / 2
    return values[int(tail * (len(values) - 1))], values[int(round((1 - tail) * (len(values) - 1)))]
