"""A W&B Report of a study, built with ``wandb-workspaces`` from the runs the sweeps logged.

    seats-exp-report --wandb my-team/seats-exp --group paper_qwen2_5_omni_7b

What the sweeps log (``seats_exp.tracking``): group = experiment, job_type = method, config keys
``model.name``, ``method.name``, ``schedule.name``/``video``/``audio``, ``benchmark``, ``seed``,
``scoring``, ``kv_scope``; summary ``accuracy``, ``R``, ``<task>/accuracy``, ``cost/prefill_tflops``,
...; history rows ``R``/``accuracy`` (one) and ``layer``/``tokens/video``/``tokens/audio``/``tokens/all``
(one per decoder layer).  The report has: accuracy vs prefill TFLOPs (scatter, one per benchmark and
the mean), accuracy vs R line plots grouped by method, per-layer token panels and a runs table
grouped by experiment.  ``build_report`` needs no network; ``save()`` needs a W&B login.
"""

from __future__ import annotations

import sys

DEFAULT_BENCHMARKS = ("worldsense", "dailyomni", "omnivideobench", "videomme", "lvomnibench")
RUN_COLUMNS = ["run:displayName", "config:model.name.value", "config:method.name.value", "config:schedule.name.value",
               "config:benchmark.value", "summary:R", "summary:accuracy", "summary:cost/prefill_tflops",
               "summary:cost/flops_ratio", "summary:n_samples", "summary:n_errors"]


def _runset(wr, entity: str, project: str, group: str | None, name: str, groupby: list[str] | None = None):
    from wandb_workspaces import expr

    filters = expr.And(expr.Metric("Group") == group) if group else ""
    return wr.Runset(entity=entity, project=project, name=name, filters=filters, groupby=groupby or [])


def build_report(entity: str, project: str, group: str | None = None, benchmarks=DEFAULT_BENCHMARKS,
                 title: str | None = None):
    """The Report object (no network needed until ``save()``)."""
    import wandb_workspaces.reports.v2 as wr

    scope = f"experiment {group}" if group else f"all runs of {entity}/{project}"
    benchmarks = list(benchmarks)
    acc_keys = [("accuracy", "mean accuracy (%)")] + [(f"{b}/accuracy", f"{b} accuracy (%)") for b in benchmarks]
    scatter = [wr.ScatterPlot(title=f"{label} vs prefill TFLOPs", x=wr.SummaryMetric("cost/prefill_tflops"),
                              y=wr.SummaryMetric(key), layout=wr.Layout(x=8 * (i % 3), y=6 * (i // 3), w=8, h=6))
               for i, (key, label) in enumerate(acc_keys)]
    vs_r = [wr.LinePlot(title=f"{label} vs R, by method", x="R", y=[key], groupby=wr.Config("method.name"),
                        groupby_aggfunc="mean", title_x="overall retention R (%)", title_y=label,
                        layout=wr.Layout(x=8 * (i % 3), y=6 * (i // 3), w=8, h=6))
            for i, (key, label) in enumerate(acc_keys)]
    legend = "${config:method.name} ${config:schedule.name} ${config:benchmark}"
    per_layer = [wr.LinePlot(title=f"{name} tokens entering each decoder layer", x="layer", y=[f"tokens/{name}"],
                             title_x="decoder layer", title_y=f"{name} tokens", legend_template=legend,
                             layout=wr.Layout(x=8 * i, y=0, w=8, h=6))
                 for i, name in enumerate(("video", "audio", "all"))]
    table_runset = _runset(wr, entity, project, group, "runs by experiment", groupby=["group"])
    table_runset.pinned_columns = list(RUN_COLUMNS)
    blocks = [
        wr.P(f"Built by seats-exp-report from {scope}: accuracy in %, TFLOPs = mean LLM-prefill TFLOPs per sample "
             "(encoders not counted), R = overall token retention in % (full tokens = 100)."),
        wr.H2("Accuracy vs prefill cost"),
        wr.PanelGrid(runsets=[_runset(wr, entity, project, group, "runs")], panels=scatter),
        wr.H2("Accuracy vs R, by method"),
        wr.PanelGrid(runsets=[_runset(wr, entity, project, group, "runs")], panels=vs_r),
        wr.H2("Tokens entering every layer"),
        wr.PanelGrid(runsets=[_runset(wr, entity, project, group, "runs")], panels=per_layer),
        wr.H2("Runs"),
        wr.PanelGrid(runsets=[table_runset], panels=[]),
    ]
    return wr.Report(project=project, entity=entity, title=title or f"seats-exp: {group or project}",
                     description=f"Token selection comparison ({scope})", blocks=blocks, width="fluid")


def logged_in() -> bool:
    from seats_exp.tracking import _has_api_key

    return _has_api_key()


def discover_benchmarks(entity: str, project: str, group: str | None) -> list[str]:
    """Task keys with a ``<task>/accuracy`` summary among the logged runs (needs a login)."""
    import wandb

    runs = wandb.Api().runs(f"{entity}/{project}", filters={"group": group} if group else None)
    found = set()
    for run in runs:
        found |= {k.split("/")[0] for k in run.summary.keys() if k.endswith("/accuracy") and k.count("/") == 1}
    order = list(DEFAULT_BENCHMARKS)
    return sorted(found, key=lambda b: (order.index(b) if b in order else len(order), b))


def main(target: str, group: str | None = None, title: str | None = None) -> int:
    entity, _, project = target.partition("/")
    if not entity or not project or "/" in project:
        print(f"seats-exp-report: --wandb wants ENTITY/PROJECT, got {target!r}", file=sys.stderr)
        return 2
    if not logged_in():
        print("seats-exp-report: W&B Report not saved: not logged in to W&B (run `wandb login` or set WANDB_API_KEY)",
              file=sys.stderr)
        return 1
    benchmarks = discover_benchmarks(entity, project, group) or list(DEFAULT_BENCHMARKS)
    report = build_report(entity, project, group, benchmarks, title)
    report.save()
    print(f"W&B Report: {report.url}")
    return 0
