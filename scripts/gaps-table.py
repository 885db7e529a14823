"""The tables of docs/results.md, "Routes per pixel on the gaps benchmark", from the evaluations
of scripts/gaps-results.sh: python3 scripts/gaps-table.py OUT SEED...

mIoU in % as mean ± sd over the seeds; differences paired by seed with a 95 % t interval. The
context margin is chosen on the validation split (best mean composite mIoU; ties: the smaller)
and every test figure uses it."""
import json
import math
import os
import statistics
import sys

# Two-sided 95 % quantiles of Student's t by degrees of freedom.
T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262}


def load(out, seed, name):
    with open(f"{out}/evals/s{seed}/{name}/metrics.json") as f:
        return json.load(f)


def group(doc, label):
    for g in doc["by_data"]:
        if g["pixels"] == label:
            return g
    return None


def pct(v):
    return "-" if v is None else f"{100 * v:.1f}"


def summary(values):
    v = [x for x in values if x is not None]
    if not v:
        return "-"
    sd = statistics.stdev(v) if len(v) > 1 else None
    mean = 100 * statistics.mean(v)
    return f"{mean:.1f}" + ("" if sd is None else f" ± {100 * sd:.1f}") + f" ({len(v)})"


def paired(a, b):
    d = [x - y for x, y in zip(a, b) if x is not None and y is not None]
    if len(d) < 2:
        return "-"
    mean, sd = statistics.mean(d), statistics.stdev(d)
    h = T975.get(len(d) - 1, 1.96) * sd / math.sqrt(len(d))
    mark = " ≈" if mean - h <= 0 <= mean + h else ""
    return f"{100 * mean:+.1f} [{100 * (mean - h):+.1f}, {100 * (mean + h):+.1f}]{mark}"


def settings_of(out, seeds):
    """(margin, blend) of every val composite evaluated."""
    found = set()
    for n in os.listdir(f"{out}/evals/s{seeds[0]}"):
        if n.startswith("val-composite-m") and not n.endswith(".log"):
            m, b = n[len("val-composite-m"):].split("-b")
            found.add((int(m), int(b)))
    return sorted(found)


def choose(out, seeds):
    """The (margin, blend) of the best mean composite mIoU on val (ties: the smaller margin,
    then the smaller blend), and every setting's val and test figures."""
    settings = settings_of(out, seeds)
    name = lambda split, m, b: f"{split}-composite-m{m}-b{b}"
    val = {k: [load(out, s, name("val", *k))["miou"] for s in seeds] for k in settings}
    test = {k: [load(out, s, name("test", *k))["miou"] for s in seeds] for k in settings}
    best = max(settings, key=lambda k: (statistics.mean(val[k]), -k[0], -k[1]))
    return best, settings, val, test


def main():
    if sys.argv[1] == "--choose":
        print(*choose(sys.argv[2], sys.argv[3:])[0])
        return
    out, seeds = sys.argv[1], sys.argv[2:]
    (m, b), settings, val, test = choose(out, seeds)
    tag = f"m{m}-b{b}"
    print(f"Seeds {', '.join(seeds)}; test split; mIoU (%) mean ± sd (n).\n")
    print("#### The context margin and route blend, chosen on the validation split\n")
    print("| margin (px) | blend (px) | val: composite | test: composite |\n|---:|---:|---:|---:|")
    for k in settings:
        mark = " (chosen)" if k == (m, b) else ""
        print(f"| {k[0]} | {k[1]}{mark} | {summary(val[k])} | {summary(test[k])} |")
    comp = [load(out, s, f"test-composite-{tag}") for s in seeds]
    teacher = [load(out, s, f"test-teacher-{tag}") for s in seeds]
    one = [load(out, s, "test-one-route") for s in seeds]
    print(f"\n#### By what the data lacks (margin {m} px, blend {b} px)\n")
    print("| pixels | labelled (seed 1) | composite | same branch, modality dropped from every scene "
          "| composite minus it | teacher-fill everywhere | today's output: scored |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    labels = [g["pixels"] for g in comp[0]["by_data"]]
    for label in labels:
        c = [(group(d, label) or {}).get("miou") for d in comp]
        if label == "complete":
            ref_name, ref = "teacher", [(group(d, label) or {}).get("miou") for d in teacher]
        elif label.startswith("missing "):
            drop = label[len("missing "):].replace("+", "+")
            try:
                docs = [load(out, s, f"test-drop-{drop}-{tag}") for s in seeds]
                ref_name, ref = f"student[{drop}]", [(group(d, label) or {}).get("miou") for d in docs]
            except FileNotFoundError:
                ref_name, ref = "(no student trained)", [None] * len(seeds)
        else:
            ref_name, ref = "-", [None] * len(seeds)
        fill = [(group(d, label) or {}).get("miou") for d in teacher]
        g1, o1 = group(comp[0], label), group(one[0], label)
        covered = "-" if not o1 or not o1["labelled"] else f"{100 * o1['scored'] / o1['labelled']:.0f} %"
        print(f"| {label} | {g1['labelled']} | {summary(c)} | {ref_name}: {summary(ref)} | "
              f"{paired(c, ref)} | {summary(fill)} | {covered} |")
    print("\n#### The whole split\n")
    print("| output | mIoU over the pixels it scores | labelled pixels scored (seed 1) |\n|---|---:|---:|")
    for name, docs in [("composite (routes per pixel)", comp), ("teacher-fill everywhere", teacher),
                       ("today's output (one branch per scene)", one)]:
        d = docs[0]
        share = 100 * d["pixels"] / sum(g["labelled"] for g in d["by_data"])
        print(f"| {name} | {summary([x['miou'] for x in docs])} | {share:.1f} % |")
    print(f"\ncomposite minus teacher-fill everywhere: {paired([d['miou'] for d in comp], [d['miou'] for d in teacher])}")
    print("\n#### By the branch that classified each pixel (seed 1)\n")
    print("| branch | pixels scored | mIoU |\n|---|---:|---:|")
    for g in comp[0]["by_route"]:
        print(f"| {g['pixels']} | {g['scored']} | {pct(g['miou'])} |")


if __name__ == "__main__":
    main()
