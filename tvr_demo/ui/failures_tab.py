"""The Failures tab: the benchmark's metrics, every query the model gets wrong (worst first, filterable by slice),
recall per slice, two models compared query by query, and the blind spots the failures have in common."""

from __future__ import annotations

from typing import TYPE_CHECKING

import gradio as gr
import pandas as pd
import plotly.graph_objects as go

import tvr_demo
from tvr_demo import plots
from tvr_demo.diagnosis.blind_spots import (
    CHANCE,
    BlindSpots,
    blind_spots,
    confusion_matrix,
    failure_differences,
)
from tvr_demo.errors import QueryError
from tvr_demo.ui.explain_tab import ExplainFields, open_pair, pick
from tvr_demo.ui.inputs import BRANCHES, checked_number, ranking_branch
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.listeners import HEAVY, PROGRESS, listener, wire

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

    from tvr_demo import Engine
    from tvr_demo.ui.page import Page
    from tvr_demo.ui.session import Session


def _shown() -> tuple:
    """Show two panels that stay hidden (their place held by a line of text) until they have something to show."""
    return gr.update(visible=True), gr.update(visible=True)


def _branch_of(engines: dict[str, Engine], name: str, branch: str | None) -> str:
    """The branch to rank by for one of the models a view compares: the selected model (the first) must have it;
    a second model without it ranks by its own default, which its label names (WTI, fused, ...)."""
    engine = engines[name]
    if name != next(iter(engines)) and branch not in engine.branches:
        branch = None
    return engine.ranking_branch(branch)


ALL_SLICES = "(all)"
# Failure-table column widths: auto widths gave a caption the whole row at 1440 px and pushed "ground truth", "rank"
# and "beaten by" off the right edge; captions and slices wrap instead. A column not named here gets the default.
FAILURE_COLUMN_WIDTHS = {
    "t2v": {"query #": "5%", "caption": "26%", "ground truth": "9%", "rank": "5%", "beaten by": "9%",
            "margin": "7%", "differs in": "14%", "slices": "25%"},
    "v2t": {"video": "9%", "best GT caption": "22%", "rank": "5%", "beaten by": "22%", "margin": "7%",
            "differs in": "13%", "slices": "22%"},
}
FAILURE_DEFAULT_WIDTH = "10%"
COMPARE_COLUMN_WIDTHS = ["18%", "9%", "49%", "12%", "12%"]  # which, query #, caption, the two models' ranks
TABLE_HEIGHT = 1100  # px: wrapped rows are two or three lines, so about 15 show before the table scrolls


def failure_column_widths(columns, direction: str) -> list[str]:
    widths = FAILURE_COLUMN_WIDTHS.get(direction, {})
    return [widths.get(c, FAILURE_DEFAULT_WIDTH) for c in columns]


METRIC_FORMATS = {"R@1": "{:.1f}", "R@5": "{:.1f}", "R@10": "{:.1f}", "MdR": "{:.1f}", "MnR": "{:.2f}"}


def metrics_view(engine: Engine, name: str) -> tuple[go.Figure, Styler]:
    """Recall bars in both directions (per branch for UNIFY) and the full table with MdR and MnR, each column shown
    to one number of decimals (the values stay numbers for API clients)."""
    result = engine.analysis.evaluate()
    series = ({b: {"t2v": m.t2v, "v2t": m.v2t} for b, m in result.branches.items()} if engine.is_unify
              else {name: {"t2v": result.top.t2v, "v2t": result.top.v2t}})
    rows = [{"series": s, "direction": d, **{k: round(v, 2) for k, v in m[d].items()}}
            for s, m in series.items() for d in ("t2v", "v2t")]
    title = f"{name} on {engine.bench.name}/{engine.bench.split} ({engine.gallery_size} videos)"
    return plots.metrics_figure(series, title=title), pd.DataFrame(rows).style.format(METRIC_FORMATS)


def query_slices(engine: Engine, direction: str) -> list[list[str]]:
    """Slice labels per query: a caption's own (t2v), or the union of a video's captions' labels (v2t)."""
    return engine.analysis.query_slices(direction)


def slice_choices(engine: Engine, limit: int = 60) -> list[str]:
    counts = engine.analysis.slice_counts()
    return [ALL_SLICES] + [label for label, _ in counts.most_common(limit)]


def failures_view(engine: Engine, direction: str, branch: str | None, sort_by: str, slice_label: str | None,
                  limit: int) -> tuple[pd.DataFrame, list[tuple[str, int, str, int]], str]:
    """Failed queries (ground truth not first), worst first, optionally within one slice. Each row comes with the
    two pairs the explain view should show: (ground-truth caption, video) and (the pair that won)."""
    branch = engine.ranking_branch(branch)
    failed = engine.analysis.failures(direction, branch, sort_by)
    labels = query_slices(engine, direction)
    if slice_label and slice_label != ALL_SLICES:
        failed = [o for o in failed if slice_label in labels[o.query]]
    bench, rows, pairs = engine.bench, [], []
    for o in failed[: int(limit)]:
        if direction == "t2v":
            rows.append({"query #": o.query, "caption": bench.captions[o.query], "ground truth": bench.video_ids[o.gt],
                         "rank": o.rank + 1, "beaten by": bench.video_ids[o.top],
                         "differs in": _differences(engine, o.gt, o.top, bench.captions[o.query]),
                         "margin": round(o.margin, 4), "slices": _compact(labels[o.query])})
            pairs.append((bench.captions[o.query], o.gt, bench.captions[o.query], o.top))
        else:
            rows.append({"video": bench.video_ids[o.query], "best GT caption": bench.captions[o.gt],
                         "rank": o.rank + 1, "beaten by": bench.captions[o.top],
                         "differs in": _differences(engine, o.query, int(bench.caption_video[o.top]),
                                                    bench.captions[o.gt]),
                         "margin": round(o.margin, 4), "slices": _compact(labels[o.query])})
            pairs.append((bench.captions[o.gt], o.query, bench.captions[o.top], o.query))
    n_queries = len(labels) if not slice_label or slice_label == ALL_SLICES else sum(
        slice_label in row for row in labels)
    summary = (f"**{len(failed)}** of {n_queries} {direction} queries miss rank 1 ({score_kind(engine.config, branch)} score); "
               f"showing {len(rows)}, worst {sort_by} first. Click a row to explain it.")
    return pd.DataFrame(rows), pairs, summary


def _compact(labels: list[str]) -> str:
    """A row's slice labels in a few words: the values of each attribute ("yellow · up · square"), keywords as
    they are, so a row of the failure table stays two lines tall (the slice picker keeps the full labels)."""
    values: dict[str, list[str]] = {}
    for label in labels:
        key, _, value = label.rpartition(":")
        values.setdefault(key, []).append(value)
    return " · ".join(", ".join(v) for v in values.values())


def _differences(engine: Engine, truth: int, winner: int, query: str) -> str:
    """What the winner shows that the ground truth does not (tvr_demo.diagnosis.blind_spots), for a failure row."""
    return ", ".join(str(d) for d in failure_differences(engine, truth, winner, query))


def slices_view(engines: dict[str, Engine], branch: str | None, top: int = 25) -> go.Figure:
    """R@1 per slice (t2v) for one model, or for two side by side."""
    per_model = {}
    for name, engine in engines.items():
        stats = engine.analysis.slice_metrics(_branch_of(engines, name, branch))
        per_model[name] = dict(list(stats.items())[:top])
    first = next(iter(engines.values()))
    return plots.slice_figure(per_model, title=f"text → video R@1 per slice ({first.bench.name}/{first.bench.split})")


def compare_view(engine_a: Engine, name_a: str, engine_b: Engine, name_b: str, k: int
                 ) -> tuple[go.Figure, pd.DataFrame, list[tuple[str, int, str, int]], str]:
    """Which t2v queries one model gets into the top k and the other does not."""
    if engine_a.bench.root != engine_b.bench.root or engine_a.bench.split != engine_b.bench.split:
        raise QueryError("both models must be evaluated on the same gallery")
    comparison = engine_a.analysis.compare(engine_b.analysis, int(k))
    ranks_a, ranks_b, cells = comparison.ranks_a, comparison.ranks_b, comparison.cells
    bench, rows, pairs = engine_a.bench, [], []
    for cell, label in (("a_only", f"only {name_a} right"), ("b_only", f"only {name_b} right")):
        for q in cells[cell]:
            rows.append({"which": label, "query #": int(q), "caption": bench.captions[q],
                         f"rank {name_a}": int(ranks_a[q]) + 1, f"rank {name_b}": int(ranks_b[q]) + 1})
            gt = int(bench.caption_video[q])
            pairs.append((bench.captions[q], gt, "", -1))
    counts = comparison.counts
    summary = (f"{name_a} right only: **{counts['a_only']}** · {name_b} right only: **{counts['b_only']}** · "
               f"both right: {counts['both_right']} · both wrong: {counts['both_wrong']} (top {int(k)}, "
               f"{len(ranks_a)} queries). Click a row to explain it with the selected model.")
    return plots.compare_figure(counts, name_a, name_b, int(k)), pd.DataFrame(rows), pairs, summary


TOP_WORDS = 20  # words in the word-miss bars on benchmarks without attribute files


def _name(name: str, kind: str) -> str:
    return f"{name} ({kind})"


def blind_spots_view(engines: dict[str, Engine], branch: str | None) -> tuple[go.Figure, go.Figure, str]:
    """The first model's blind spots beside the second's: twin scores per attribute (or the words failures lose)
    and the first model's confusion matrices; a summary naming its weakest attribute."""
    spots = {name: blind_spots(e, _branch_of(engines, name, branch)) for name, e in engines.items()}
    kinds = {name: score_kind(engines[name].config, s.branch) for name, s in spots.items()}  # WTI, not "latent"
    first_name, first = next(iter(spots.items()))
    bench = next(iter(engines.values())).bench
    where = f"{bench.name}/{bench.split}"
    if first.kind == "attributes":
        scores = {_name(n, kinds[n]): [(a.attribute, a.n, a.text, a.video, a.group) for a in s.scores]
                  for n, s in spots.items()}
        top = plots.twin_scores_figure(scores, CHANCE, title=f"twin pairs on {where}: Winoground scores per attribute")
    else:
        top = plots.word_misses_figure({_name(n, kinds[n]): {w: (s.word_misses[w], s.word_queries[w])
                                                for w, _ in s.word_misses.most_common(TOP_WORDS)}
                                  for n, s in spots.items()},
                                 title=f"{where} has no attribute files: the query words each model's failures lose")
    matrices = {a: confusion_matrix(c) for a, c in first.confusions.items()}
    subtitles = {a: f"{first.failures_by[a]} failures" for a in first.failures_by}
    label = ("query word", "winner's word") if first.kind == "words" else ("ground truth", "winner")
    confusion = plots.confusion_figure(matrices, f"{_name(first_name, kinds[first_name])}: what the clip that beat the ground truth "
                                           f"shows instead, over its {first.n_failures} text → video failures",
                                 *label, subtitles)
    return top, confusion, "\n\n".join(_summary(n, s, kinds[n]) for n, s in spots.items())


def _summary(name: str, spots: BlindSpots, kind: str) -> str:
    if spots.kind == "words":
        if not spots.word_misses:
            return f"**{name}** ({kind}): no failure loses a query word."
        word, n = spots.word_misses.most_common(1)[0]
        return (f"**{name}** ({kind}): {spots.n_failures} failures; the word its failures lose most is "
                f"**{word}** ({n} of {spots.word_queries[word]} queries with it).")
    scored = [a for a in spots.scores if a.attribute != "all"]
    if not scored:
        return f"**{name}** ({kind}): this gallery has no twin pairs."
    worst = min(scored, key=lambda a: (a.group, a.attribute))
    overall = next(a for a in spots.scores if a.attribute == "all")
    most = ""
    if spots.failures_by:
        attribute, n = min(spots.failures_by.items(), key=lambda item: (-item[1], item[0]))
        most = (f"; the clip that beats the ground truth differs from it in **{attribute}** in {n} of its "
                f"{spots.n_failures} failures")
    return (f"**{name}** ({kind}): group score {100 * overall.group:.1f}% over {overall.n} twin pairs "
            f"(chance {100 * CHANCE['group']:.1f}%); weakest attribute **{worst.attribute}** "
            f"({100 * worst.group:.1f}% of {worst.n} pairs){most}.")




# what a gallery without captions hides (its sentence shows instead)
GROUND_TRUTH_VIEWS = ("metrics_btn", "metrics_row", "controls_row", "failures_btn", "failures_md", "failures_table",
                      "compare_controls", "slices_fig", "compare_md", "compare_row", "blind_accordion")


class FailuresTab:
    """The benchmark's numbers and every failure behind them, for one model or beside a second one."""

    title, id = "Failures", "failures"

    def __init__(self, session: Session) -> None:
        self.session = session

    def layout(self, page: Page) -> None:
        self.tab = page.current_tab
        self.notice = gr.Markdown(visible=False, elem_id="failures-notice")  # a gallery without captions: why empty
        self.metrics_btn = gr.Button("Evaluate")
        with gr.Row() as self.metrics_row:
            self.metrics_fig = gr.Plot(label="Benchmark metrics", elem_id="metrics-plot")
            self.metrics_table = gr.Dataframe(label="All metrics", interactive=False,
                                              headers=["series", "direction", "R@1", "R@5", "R@10", "MdR", "MnR"])
        with gr.Row(equal_height=True) as self.controls_row:
            self.direction = gr.Radio(["t2v", "v2t"], value="t2v", label="Direction")
            self.branch = gr.Dropdown(BRANCHES, value="auto", label="Branch")
            self.sort_by = gr.Radio(["rank", "margin"], value="rank", label="Worst by")
            self.slice_label = gr.Dropdown([ALL_SLICES], value=ALL_SLICES, label="Slice")
            self.limit = checked_number(gr.Slider(10, 1000, value=100, step=10, label="Rows"), "Rows")
        self.failures_btn = gr.Button("List failures", variant="primary")
        self.failures_md = gr.Markdown()
        self.failures_table = gr.Dataframe(label="Failures (click a row: ground truth vs what beat it)", wrap=True,
                                           interactive=False, elem_id="failures-table", max_height=TABLE_HEIGHT,
                                           headers=["query #", "caption", "ground truth", "rank", "beaten by"])
        self.failure_pairs = gr.State([])
        models = list(self.session.models)
        with gr.Row(equal_height=True) as self.compare_controls:
            self.model_b = gr.Dropdown(models, value=models[-1], label="Second model (comparison, slices)")
            self.compare_k = checked_number(gr.Slider(1, 10, value=1, step=1, label="right: in the top k"), "top k")
            self.slices_btn = gr.Button("Slice bars")
            self.compare_btn = gr.Button("Compare the two models")
        self.slices_fig = gr.Plot(label="R@1 per slice", elem_id="slices-plot")
        self.compare_md = gr.Markdown("**Compare the two models**: how many queries each gets right (the ground truth "
                                      "in the top k), both, or neither, and the queries only one gets right.",
                                      elem_id="compare-summary")
        with gr.Row() as self.compare_row:
            self.compare_fig = gr.Plot(label="Agreement", visible=False, elem_id="compare-plot")
            self.compare_table = gr.Dataframe(label="Queries one model gets right and the other wrong", wrap=True,
                                              interactive=False, headers=["which", "query #", "caption", "rank", "rank"],
                                              column_widths=COMPARE_COLUMN_WIDTHS, elem_id="compare-table",
                                              visible=False)
        self.compare_pairs = gr.State([])
        with gr.Accordion("Blind spots: what the model cannot tell apart (twin pairs, confusions)",
                          open=True) as self.blind_accordion:
            self.blind_btn = gr.Button("Find blind spots (beside the second model)")
            self.blind_md = gr.Markdown("**Find blind spots**: twin clips that differ in one attribute, scored as "
                                        "Winoground scores them, and, over the failures, what the clip that beat the "
                                        "ground truth shows instead (on galleries without attributes: the query "
                                        "words the failures lose).", elem_id="blind-spots-summary")
            self.blind_fig = gr.Plot(label="Twin pairs per attribute", elem_id="blind-spots-plot", visible=False)
            self.confusion_fig = gr.Plot(label="What beat the ground truth, per attribute", elem_id="confusion-plot",
                                         visible=False)

    @property
    def load_outputs(self) -> list:
        return [self.slice_label, self.notice, *(getattr(self, name) for name in GROUND_TRUTH_VIEWS)]

    def loaded(self, engine: Engine) -> tuple:
        """The slices of this gallery to filter by; on a gallery without captions, the sentence that says which file
        turns this tab on, in place of its views."""
        missing = tvr_demo.missing_captions(engine.bench, "This tab")
        shown = gr.update(visible=missing is None)
        return (gr.Dropdown(choices=slice_choices(engine), value=ALL_SLICES),
                gr.Markdown(f"**{missing}.**" if missing else "", visible=missing is not None),
                *[shown] * len(GROUND_TRUTH_VIEWS))

    @property
    def figures(self) -> dict[str, gr.Plot]:
        return {"metrics": self.metrics_fig, "slices": self.slices_fig, "comparison": self.compare_fig}

    def wire(self, page: Page) -> None:
        ctx = page.context
        metrics_out = [self.metrics_fig, self.metrics_table]
        failures_in = [self.direction, self.branch, self.sort_by, self.slice_label, self.limit, *ctx]
        failures_out = [self.failures_table, self.failures_md, self.failure_pairs]
        slices_in = [self.branch, self.model_b, *ctx]
        widths = dict(fn=self.failure_widths, inputs=[self.failures_table, self.direction],
                      outputs=self.failures_table, api_visibility="private")
        wire(self.metrics_btn.click, self.run_metrics, ctx, metrics_out, api_name="metrics")
        wire(self.failures_btn.click, self.run_failures, failures_in, failures_out, api_name="failures").then(**widths)
        gate = wire(self.tab.select, self.stop_without_captions, ctx, None, api_visibility="private")
        opened = wire(gate.success, self.run_metrics, ctx, metrics_out, api_visibility="private")
        listed = wire(opened.then, self.run_failures, failures_in, failures_out, api_visibility="private")
        wire(listed.then(**widths).then, self.run_slices, slices_in, self.slices_fig, api_visibility="private")
        page.explain.opens(self.failures_table.select, self.open_pair_row, [self.failure_pairs, *ctx])
        wire(self.slices_btn.click, self.run_slices, slices_in, self.slices_fig, api_name="slices")
        compared = wire(self.compare_btn.click, self.run_compare, [self.model_b, self.compare_k, *ctx],
                        [self.compare_fig, self.compare_table, self.compare_pairs, self.compare_md], api_name="compare")
        compared.success(_shown, None, [self.compare_fig, self.compare_table], api_visibility="private")
        page.explain.opens(self.compare_table.select, self.open_pair_row, [self.compare_pairs, *ctx])
        found = wire(self.blind_btn.click, self.run_blind_spots, slices_in,
                     [self.blind_fig, self.confusion_fig, self.blind_md], api_name="blind_spots")
        found.success(_shown, None, [self.blind_fig, self.confusion_fig], api_visibility="private")

    def _engines(self, model: str, model_b: str | None, dataset: str, split: str, progress) -> dict[str, Engine]:
        """The selected model's engine, and the second model's when it differs."""
        names = [model] + ([model_b] if model_b and model_b != model else [])
        return {n: self.session.engine(n, dataset, split, progress) for n in names}

    def stop_without_captions(self, model: str, dataset: str, split: str) -> None:
        """Opening the tab evaluates the model, unless the gallery has no captions (the tab then shows its sentence):
        a silent stop, not a notice per view."""
        try:
            has = self.session.benchmark(dataset, split).num_captions > 0
        except Exception:  # a bad gallery field: the load listener has said why
            has = False
        if not has:
            raise gr.Error("no captions", visible=False, print_exception=False)

    # ------------------------------------------------------------------ listeners

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_metrics(self, model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS
                    ) -> tuple[go.Figure, pd.DataFrame]:
        """Recall bars and the metrics table."""
        return metrics_view(self.session.engine(model, dataset, split, progress), model)

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_failures(self, direction: str, branch: str | None, sort_by: str, slice_label: str | None, limit: float,
                     model: str, dataset: str, split: str, progress: gr.Progress = PROGRESS) -> tuple:
        """The failure table, its summary and the pairs its rows open."""
        engine = self.session.engine(model, dataset, split, progress)
        table, pairs, summary = failures_view(engine, direction, ranking_branch(branch), sort_by, slice_label, limit)
        return table, summary, pairs

    def failure_widths(self, table, direction: str) -> gr.Dataframe:
        """The failure table's column widths for the columns it now shows (t2v and v2t differ): an update of the
        widths alone, after /failures, whose output stays the plain table."""
        columns = list(table.columns) if isinstance(table, pd.DataFrame) else list((table or {}).get("headers", []))
        return gr.Dataframe(column_widths=failure_column_widths(columns, direction))

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_slices(self, branch: str | None, model_b: str | None, model: str, dataset: str, split: str,
                   progress: gr.Progress = PROGRESS) -> go.Figure:
        """R@1 per slice, for one model or two."""
        return slices_view(self._engines(model, model_b, dataset, split, progress), ranking_branch(branch))

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_compare(self, model_b: str, k: float, model: str, dataset: str, split: str,
                    progress: gr.Progress = PROGRESS) -> tuple:
        """Which queries one model gets into the top k and the other does not."""
        return compare_view(self.session.engine(model, dataset, split, progress), model,
                            self.session.engine(model_b, dataset, split, progress), model_b, k)

    @listener(HEAVY, gpu_seconds=60, background=True)
    def run_blind_spots(self, branch: str | None, model_b: str | None, model: str, dataset: str, split: str,
                        progress: gr.Progress = PROGRESS) -> tuple:
        """What the failures have in common, for one model or two."""
        return blind_spots_view(self._engines(model, model_b, dataset, split, progress), ranking_branch(branch))

    @listener()
    def open_pair_row(self, pairs: list, model: str, dataset: str, split: str, evt: gr.SelectData) -> ExplainFields:
        """A failure or comparison row's pairs, explained."""
        return open_pair(self.session.benchmark(dataset, split), *pick(pairs, evt.index, "row"))
