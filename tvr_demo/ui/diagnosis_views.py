"""The diagnosis views: blind spots (Failures tab, /blind_spots) and which word decides (Explain tab,
/counterfactual), as figures and a few lines of text over tvr_demo.diagnosis.blind_spots and tvr_demo.diagnosis.counterfactual."""

from __future__ import annotations

import html

import plotly.graph_objects as go

from tvr_demo import plots
from tvr_demo.diagnosis.blind_spots import CHANCE, BlindSpots, blind_spots, confusion_matrix
from tvr_demo.diagnosis.counterfactual import Counterfactual, counterfactual
from tvr_demo.retrieval.engine import Engine
from tvr_demo.ui.labels import score_kind
from tvr_demo.ui.search_views import resolve_video

TOP_WORDS = 20  # words in the word-miss bars on benchmarks without attribute files


def _branch(engine: Engine, branch: str | None) -> str:
    return engine.ranking_branch(branch if branch in engine.branches else None)


def _name(name: str, kind: str) -> str:
    return f"{name} ({kind})"


def blind_spots_view(engines: dict[str, Engine], branch: str | None) -> tuple[go.Figure, go.Figure, str]:
    """The first model's blind spots beside the second's: twin scores per attribute (or the words failures lose)
    and the first model's confusion matrices; a summary naming its weakest attribute."""
    spots = {name: blind_spots(e, _branch(e, branch)) for name, e in engines.items()}
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


def counterfactual_view(engine: Engine, query: str, video: str | None, branch: str | None) -> tuple[go.Figure, str]:
    """Which word decides the clip's rank (blank clip = the query's top result), and for a failure the smallest fix."""
    index = resolve_video(engine, video)
    if index is None:
        index = engine.search_text(query, k=1, branch=_branch(engine, branch)).hits[0].index
    cf = counterfactual(engine, query, index, _branch(engine, branch))
    ids = engine.bench.video_ids
    labels = [f"{r.edit.changes[0][0] + 1}. {r.edit.label}" for r in cf.results]
    figure = plots.counterfactual_figure(
        labels, [r.edit.text for r in cf.results], [r.score for r in cf.results], [r.rank for r in cf.results],
        ["replaced" if r.edit.attribute else "removed" for r in cf.results], cf.score, cf.rank,
        [r.truth_rank == 0 and cf.truth_rank not in (None, 0) for r in cf.results],
        title=f"which word decides: {ids[cf.video]} for “{html.escape(cf.query)}” "
              f"({score_kind(engine.config, cf.branch)})")
    return figure, _markdown(engine, cf)


def _markdown(engine: Engine, cf: Counterfactual) -> str:
    ids = engine.bench.video_ids
    lines = [f"**{ids[cf.video]}** is at rank **{cf.rank + 1}** (score {cf.score:.4f}, "
             f"{score_kind(engine.config, cf.branch)}) for the query; "
             f"{len(cf.results)} one-word edits scored against all {engine.gallery_size} videos."]
    if cf.results:
        best = min(cf.results, key=lambda r: (r.rank, -r.score))
        worst = max(cf.results, key=lambda r: (r.rank, -r.score))
        lines.append(f"Best for this clip: {best.edit.label} → rank **{best.rank + 1}**; worst: {worst.edit.label} → "
                     f"rank **{worst.rank + 1}**.")
    if cf.fix is not None:
        lines.append(f"Smallest edit that brings the ground truth **{ids[cf.ground_truth]}** from rank "
                     f"{cf.truth_rank + 1} to rank **1**: {cf.fix.edit.label} (“{html.escape(cf.fix.edit.text)}”)"
                     + (f"; {cf.fix_note}." if cf.fix_note else "."))
    elif cf.ground_truth is not None and cf.truth_rank:
        lines.append(f"Ground truth **{ids[cf.ground_truth]}** at rank {cf.truth_rank + 1}: {cf.fix_note}.")
    return "\n\n".join(lines)
