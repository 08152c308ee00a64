"""The ``dequity`` panel: cluster sizes, W(p) and weights of a run, linked to the grid."""

from __future__ import annotations

from typing import Any

import fiftyone.operators as foo
import fiftyone.operators.types as types
from fiftyone import ViewField as F

import dequity
from dequity.pipeline.views import (
    RANKED,
    RARE_BY_APPEARANCE,
    RARE_BY_CONTENT,
    RARE_BY_OFF_DOMAIN,
    describe_split,
)
from fiftyone_plugin import plots
from fiftyone_plugin.common import dropdown, object_patches_view, uri
from fiftyone_plugin.viz import owned_visualization

_PLOT_CONFIG = {"displayModeBar": False, "responsive": True}


def rarest_by_view(samples: Any, config: Any, reason: str) -> Any:
    """The samples a run found rare for ``reason`` (``"content"``/``"appearance"``), rarest first.

    Example::

        rarest_by_view(dataset, results.config, "appearance")   # e.g. night and fog first
    """
    return samples.match(F(config.rare_by_field) == reason).sort_by(
        config.weight_field, reverse=True
    )


def _event_param(ctx: Any, key: str) -> Any:
    """A parameter of a panel event (App events carry them in params or event_args)."""
    value = ctx.params.get(key)
    if value is None:
        value = (getattr(ctx, "event_args", None) or {}).get(key)
    return value


class DequityPanel(foo.Panel):
    """Inspect a dequity run: which appearances are common, which are rare."""

    @property
    def config(self) -> foo.PanelConfig:
        return foo.PanelConfig(
            name="dequity",
            label="Dequity",
            icon="balance",
            help_markdown=(
                "Cluster sizes of a dequity run from common to rare, its weight curve "
                "W(p) and its weights. Click a bar to show that cluster's samples."
            ),
        )

    def _run_key(self, ctx: Any) -> str | None:
        runs = dequity.list_dequity_runs(ctx.dataset) if ctx.dataset is not None else []
        key = ctx.panel.state.run_key
        if key not in runs:
            key = runs[0] if runs else None
            ctx.panel.state.run_key = key
        return key

    def on_load(self, ctx: Any) -> None:
        self._run_key(ctx)

    def on_change_dataset(self, ctx: Any) -> None:
        ctx.panel.state.run_key = None
        self._run_key(ctx)

    def on_change_run(self, ctx: Any) -> None:
        ctx.panel.state.run_key = _event_param(ctx, "value")

    def on_click_cluster(self, ctx: Any) -> None:
        """Show the clicked cluster's samples in the grid."""
        run_key = self._run_key(ctx)
        cluster_id = plots.parse_cluster_label(_event_param(ctx, "id") or _event_param(ctx, "x"))
        if run_key is None or cluster_id is None:
            return
        config = dequity.load_dequity_results(ctx.dataset, run_key).config
        ctx.panel.state.cluster = cluster_id
        if getattr(config, "patches_field", None) is not None:  # the cluster's boxes
            ctx.ops.set_view(object_patches_view(ctx.dataset, run_key, cluster_id))
            return
        ctx.ops.set_view(ctx.dataset.match(F(config.cluster_field) == cluster_id))

    def on_object_patches(self, ctx: Any) -> None:
        """Show an object run's boxes as patches, rarest (highest weight) first."""
        run_key = self._run_key(ctx)
        if run_key is None:
            return
        ctx.panel.state.cluster = None
        ctx.ops.set_view(object_patches_view(ctx.dataset, run_key))

    def on_sort_rarest(self, ctx: Any) -> None:
        """Sort the grid by the run's weight, rarest (highest weight) first."""
        run_key = self._run_key(ctx)
        if run_key is None:
            return
        field = dequity.load_dequity_results(ctx.dataset, run_key).config.weight_field
        ctx.panel.state.cluster = None
        ctx.ops.set_view(ctx.dataset.sort_by(field, reverse=True))

    def on_rarest_by_content(self, ctx: Any) -> None:
        """The samples that are rare for what they show, rarest first."""
        self._rarest_by(ctx, RARE_BY_CONTENT)

    def on_rarest_by_appearance(self, ctx: Any) -> None:
        """The samples that are rare for how they look, rarest first."""
        self._rarest_by(ctx, RARE_BY_APPEARANCE)

    def on_rarest_off_domain(self, ctx: Any) -> None:
        """The samples unlike the set's kinds altogether, rarest first."""
        self._rarest_by(ctx, RARE_BY_OFF_DOMAIN)

    def _rarest_by(self, ctx: Any, reason: str) -> None:
        run_key = self._run_key(ctx)
        if run_key is None:
            return
        config = dequity.load_dequity_results(ctx.dataset, run_key).config
        ctx.panel.state.cluster = None
        ctx.ops.set_view(rarest_by_view(ctx.dataset, config, reason))

    def on_clear_view(self, ctx: Any) -> None:
        ctx.panel.state.cluster = None
        ctx.ops.clear_view()

    def on_compute(self, ctx: Any) -> None:
        ctx.prompt(uri("compute_dequity"))

    def on_reweight(self, ctx: Any) -> None:
        ctx.prompt(uri("reweight_dequity"), params={"run_key": ctx.panel.state.run_key})

    def on_open_embeddings(self, ctx: Any) -> None:
        ctx.ops.open_panel("Embeddings", layout="horizontal", is_active=True)

    def render(self, ctx: Any) -> types.Property:
        panel = types.Object()
        run_key = self._run_key(ctx)
        if run_key is None:
            panel.md(
                "### No dequity runs yet\n"
                "Compute one to see which images are visually common and which are rare.",
                name="intro",
            )
            panel.btn(
                "compute", label="Compute dequity", on_click=self.on_compute, variant="contained"
            )
            return types.Property(panel, view=types.GridView(orientation="vertical"))

        runs = dequity.list_dequity_runs(ctx.dataset)
        dropdown(panel, "run_key", runs, default=run_key, label="Run", on_change=self.on_change_run)

        results = dequity.load_dequity_results(ctx.dataset, run_key)
        s = results.summary()
        cfg = results.config
        objects = (
            f"**{s['num_objects']}** objects of `{cfg.patches_field}` on "
            if "num_objects" in s
            else ""
        )
        panel.md(
            f"{objects}**{s['num_samples']}** samples, **{s['num_clusters']}** clusters, "
            f"**{s['noise_fraction']:.1%}** noise ({cfg.noise} policy) · "
            f"eta={cfg.eta:g}, gamma={cfg.gamma:g} · weights "
            f"{s['min_weight']:.3f} to {s['max_weight']:.3f} in `{cfg.weight_field}`",
            name="summary",
        )

        if results.views:
            panel.md(
                f"Rare in any view (`{cfg.rare_by_field}`): {describe_split(results.rare_by)}",
                name="views_split",
            )
            by_view = panel.h_stack("views_buttons", align_x="left", gap=1)
            by_view.btn(
                "rarest_by_content",
                label="Rarest by content",
                on_click=self.on_rarest_by_content,
            )
            by_view.btn(
                "rarest_by_appearance",
                label="Rarest by appearance",
                on_click=self.on_rarest_by_appearance,
            )
            if cfg.views == RANKED:
                by_view.btn(
                    "rarest_off_domain",
                    label="Rarest off-domain",
                    on_click=self.on_rarest_off_domain,
                )

        buttons = panel.h_stack("buttons", align_x="left", gap=1)
        if "num_objects" in s:
            buttons.btn(
                "object_patches",
                label="Object patches, rarest first",
                on_click=self.on_object_patches,
                variant="contained",
            )
        buttons.btn(
            "sort",
            label="Sort grid rarest first",
            on_click=self.on_sort_rarest,
            variant="contained",
        )
        buttons.btn("clear", label="Show all", on_click=self.on_clear_view)
        buttons.btn("reweight", label="Reweight...", on_click=self.on_reweight)
        buttons.btn("compute", label="New run...", on_click=self.on_compute)
        if owned_visualization(ctx.dataset, run_key):
            buttons.btn("embeddings", label="Embeddings panel", on_click=self.on_open_embeddings)

        if results.labels:
            traces, layout = plots.cluster_size_bars(results.cluster_sizes())
            panel.plot(
                "cluster_sizes",
                data=traces,
                layout=layout,
                config=_PLOT_CONFIG,
                on_click=self.on_click_cluster,
                height=40,
            )
        else:
            panel.md(
                "This run used k-NN neighbourhood counts (`clustering='knn'`): no clusters; each "
                "image's likelihood is the number of images near it over the largest such count.",
                name="no_clusters",
            )
        traces, layout = plots.weight_curve(cfg.eta, cfg.gamma, results.likelihoods)
        panel.plot("weight_curve", data=traces, layout=layout, config=_PLOT_CONFIG, height=40)
        traces, layout = plots.histogram(
            results.likelihoods, "Likelihood distribution", "likelihood p"
        )
        panel.plot(
            "likelihood_histogram", data=traces, layout=layout, config=_PLOT_CONFIG, height=40
        )
        traces, layout = plots.histogram(results.weights, "Weight distribution")
        panel.plot("weight_histogram", data=traces, layout=layout, config=_PLOT_CONFIG, height=40)
        return types.Property(panel, view=types.GridView(orientation="vertical", gap=2))
