"""The CONVVIZ tab's backend: thin werkzeug handlers over `payloads`, validation in `params`."""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Optional

from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from tb_convviz.schema import format as fmt
from tb_convviz.analysis.embedding import available_methods
from tb_convviz.plugin import payloads
from tb_convviz.plugin.cache import AnswerCache, CachingProvider
from tb_convviz.plugin.history import HistoryCache
from tb_convviz.plugin.params import RequestParams
from tb_convviz.read.findings import run_findings
from tb_convviz.read.memo import Memo
from tb_convviz.read.reader import ConvVizReader, NotFound, Problems, SolveBusy
from tb_convviz.read.run_folders import RunFolders
from tb_convviz.read.store import RecordStore

_logger = logging.getLogger(__name__)
INDEX_ENTRIES = 512  # runs whose /index entry is kept: a sweep's, tens of kB each


def frontend_dir() -> Path:
    """The dashboard's ES modules: inside the installed package, or `frontend/` in a source checkout."""
    try:
        import tb_convviz.frontend as shipped  # present in a built wheel

        return Path(next(iter(shipped.__path__)))
    except ImportError:
        return Path(__file__).resolve().parents[2] / "frontend"


_STATIC_TYPES = {".js": "text/javascript", ".css": "text/css"}


class Encoded(str):
    """An answer already in JSON."""


def _json(request: wrappers.Request, payload: object, code: int = 200, headers: Optional[dict[str, str]] = None) -> wrappers.Response:
    # Not gzipped: the bulk is base64 of 8-bit arrays, which gzip barely shrinks but which took
    # most of a layer answer's time to compress (26 of 42 ms for a 512-filter layer).
    body = payload if isinstance(payload, Encoded) else json.dumps(payload, allow_nan=False)
    return http_util.Respond(request, body, "application/json", code=code, content_encoding="identity",
                             headers=list(headers.items()) if headers else None)


class ConvVizPlugin(base_plugin.TBPlugin):
    """Serves per-layer filter data and comparisons for the CONVVIZ tab."""

    plugin_name = fmt.PLUGIN_NAME

    def __init__(self, context: base_plugin.TBContext):
        self._provider = CachingProvider(context.data_provider)
        # Records in sidecar files are read from the folders TensorBoard was started on
        # (`--logdir`, or each folder of a `--logdir_spec`).
        self._store = RecordStore(RunFolders.of_tensorboard(context))
        self._answers = AnswerCache()
        self._index_entries: Memo[dict] = Memo(INDEX_ENTRIES)  # each run's /index entry, by its signature
        self._index_answers: Memo[Encoded] = Memo(2)  # /index in JSON (~360 kB for 20 runs: 14 ms to encode), by its state
        self._histories = HistoryCache()
        self._problems = Problems()  # unreadable records met by any route, listed by /index
        self._static_root = frontend_dir().resolve()

    def get_plugin_apps(self) -> dict[str, Callable]:
        return {
            "/index.js": self._serve_entry,
            "/static/*": self._serve_static,
            "/index": self._route(self._index),
            "/layer": self._route(self._layer),
            "/filter": self._route(self._filter),
            "/probe": self._route(lambda r, p: payloads.probe(r, p.run())),
            "/compare": self._route(self._compare, cached=True),
            "/perturbation": self._route(self._analysis(fmt.KIND_PERTURBATION)),
            "/impact": self._route(self._analysis(fmt.KIND_IMPACT)),
            "/table": self._route(self._table),
            "/cost": self._route(lambda r, p: payloads.cost(r, p.run()), cached=True),
            "/cka_layers": self._route(self._cka_layers, cached=True),
            "/cka_epochs": self._route(lambda r, p: payloads.cka_epochs(r, *self._run_layer(p)), cached=True),
            "/cka_final": self._route(lambda r, p: payloads.cka_to_final(r, p.run()), cached=True),
            "/embedding": self._route(self._embedding, cached=True),
            "/shape_texture": self._route(self._shape_texture),
            "/feature_vis": self._route(self._feature_vis),
            "/feature_vis_history": self._route(self._feature_vis_history, cached=True),
            "/findings": self._route(self._findings, cached=True),
        }

    def is_active(self) -> bool:
        return False  # activity comes from data_plugin_names via the data provider

    def data_plugin_names(self) -> tuple[str, ...]:
        return (fmt.PLUGIN_NAME,)

    def frontend_metadata(self) -> base_plugin.FrontendMetadata:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="CONVVIZ")

    # -- handlers: parse, call, respond -------------------------------------------------------

    def _route(self, impl: Callable[[ConvVizReader, RequestParams], object], cached: bool = False) -> Callable:
        """A handler: parse, call `impl`, answer JSON; `cached` keeps answers per request and runs' state."""

        @wrappers.Request.application
        def handler(request: wrappers.Request) -> wrappers.Response:
            reader = ConvVizReader(
                self._provider, plugin_util.experiment_id(request.environ), plugin_util.context(request.environ), self._problems,
                self._store, one_answer=True,
            )
            try:
                params = RequestParams(request.args, reader)
                if not cached:
                    return _json(request, impl(reader, params))
                runs = sorted({params.run(name) for name in ("run", "run_a", "run_b") if name in request.args})
                key = (request.path, tuple(sorted(request.args.items(multi=True))), tuple(reader.signature(r) for r in runs))
                return _json(request, self._answers.get_or_compute(key, lambda: impl(reader, params)))
            except SolveBusy as e:  # every solve slot taken: come back rather than queue without bound
                return _json(request, {"error": str(e)}, 503, {"Retry-After": str(e.retry_after_s)})
            except (errors.PublicError, NotFound) as e:  # NotFound: a record missing past the parameter checks
                public = e if isinstance(e, errors.PublicError) else errors.NotFoundError(str(e))
                return _json(request, {"error": str(public)}, public.http_code)
            except Exception as e:  # noqa: BLE001 - a record whose fields are not what its kind promises
                # Records are data from disk: one that decodes but holds the wrong types must cost
                # this answer, not the tab. The server log keeps the trace for a bug report.
                _logger.warning("convviz: %s could not be answered from the logs", request.path, exc_info=True)
                return _json(request, {"error": f"the logs hold a record this answer cannot use ({type(e).__name__}: {e})"}, 422)

        return handler

    def _index(self, reader: ConvVizReader, p: RequestParams) -> Encoded:
        return self._index_answers.get_or_compute(
            payloads.index_state(reader), lambda: Encoded(json.dumps(payloads.index(reader, self._index_entries), allow_nan=False)))

    def _layer(self, reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        layer = p.layer(run)
        answer = payloads.layer(reader, run, layer, p.step(run, layer))
        # The slider comes next: warm every step of this layer (filters ~10 KB, maps ~50 KB each).
        for kind in (fmt.KIND_FILTERS, fmt.KIND_MAPS):
            if kind in reader.kinds(run, layer):
                reader.prefetch(run, layer, kind)
        return answer

    def _filter(self, reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        layer = p.layer(run)
        step = p.step(run, layer)
        filters = reader.bundle(run, layer, fmt.KIND_FILTERS, step).meta["info"]["filters"]
        return payloads.filter_detail(reader, run, layer, step, p.filter(filters), self._histories)

    @staticmethod
    def _analysis(kind: str) -> Callable[[ConvVizReader, RequestParams], dict]:
        def impl(reader: ConvVizReader, p: RequestParams) -> dict:
            run = p.run()
            layer = p.layer(run)
            # Any logged step of the layer: the answer is its last `kind` record at or before it.
            return payloads.analysis(reader, run, layer, p.step(run, layer), p.kind(run, layer, kind))

        return impl

    @staticmethod
    def _table(reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        layer = p.layer(run)
        return payloads.table(reader, run, layer, p.step(run, layer))

    def _compare(self, reader: ConvVizReader, p: RequestParams) -> dict:
        run_a = p.run("run_a")
        run_b = p.run("run_b")
        layer = p.layer(run_a)
        p.layer(run_b)
        step_a = p.step(run_a, layer, "step_a")
        step_b = p.step(run_b, layer, "step_b")
        answer = payloads.compare(reader, layer, run_a, step_a, run_b, step_b, p.choice("align", ("index", "match", "aligned")),
                                  p.optional_integer("pair_step"))
        # The slider comes next, and keeps the pairing: warm every step's filters and profiles.
        for run in {run_a, run_b}:
            for kind in (fmt.KIND_FILTERS, fmt.KIND_PROFILE):
                if kind in reader.kinds(run, layer):
                    reader.prefetch(run, layer, kind)
        return answer

    @staticmethod
    def _run_layer(p: RequestParams) -> tuple[str, str]:
        run = p.run()
        return run, p.layer(run)

    @staticmethod
    def _cka_layers(reader: ConvVizReader, p: RequestParams) -> dict:
        run_a, run_b = p.run("run_a"), p.run("run_b")
        step_a = p.step(run_a, fmt.RUN_LAYER, "step_a", kind=fmt.KIND_GRAM)
        step_b = p.step(run_b, fmt.RUN_LAYER, "step_b", kind=fmt.KIND_GRAM)
        return payloads.cka_layers(reader, run_a, step_a, run_b, step_b)

    @staticmethod
    def _feature_vis(reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        layer = p.layer(run)
        step = p.step(run, layer)
        p.kind(run, layer, fmt.KIND_FEATURE_VIS)
        return payloads.feature_vis(reader, run, layer, step)

    @staticmethod
    def _feature_vis_history(reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        layer = p.layer(run)
        p.kind(run, layer, fmt.KIND_FEATURE_VIS)
        return payloads.feature_vis_history(reader, run, layer, p.filter(reader.filter_count(run, layer)))

    @staticmethod
    def _shape_texture(reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        return payloads.shape_texture(reader, run, p.integer("step"))

    @staticmethod
    def _findings(reader: ConvVizReader, p: RequestParams) -> dict:
        run = p.run()
        return run_findings(reader, run, p.run_step(run))

    def _embedding(self, reader: ConvVizReader, p: RequestParams) -> dict:
        run, layer = self._run_layer(p)
        # Only the methods whose package is installed: a missing one is a 400 that says so.
        return payloads.embedding(reader, run, layer, p.choice("method", available_methods()))

    @wrappers.Request.application
    def _serve_entry(self, request: wrappers.Request) -> wrappers.Response:
        return self._static_file(request, "index.js")

    @wrappers.Request.application
    def _serve_static(self, request: wrappers.Request) -> wrappers.Response:
        return self._static_file(request, request.path.split("/static/", 1)[1])

    def _static_file(self, request: wrappers.Request, relative: str) -> wrappers.Response:
        """Serve a dashboard file; nothing outside the frontend folder, only .js/.css."""
        try:
            path = (self._static_root / relative).resolve()
        except (ValueError, OSError):  # a NUL byte or a malformed name: no such file
            path = self._static_root
        if self._static_root not in path.parents or path.suffix not in _STATIC_TYPES or not path.is_file():
            return _json(request, {"error": f"no dashboard file {relative!r}"}, 404)
        return http_util.Respond(request, path.read_bytes(), _STATIC_TYPES[path.suffix])
