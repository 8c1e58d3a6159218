"""Turn the raw results of a run into report.md and chart.png.

Every cell is the median over the reps of the successful runs of one loop;
the ratio in parentheses compares it with the baseline loop (uvloop) *in the
same run*.  Throughput ratios are loop / baseline (above 1 = faster); CPU per
request and memory ratios are loop / baseline too, so there below 1 is
better.  A cell with failures says how many reps failed; FAIL means all did;
n/a means the loop does not implement that mode.

``python run.py --report results/raw.json`` rebuilds both files.
"""

import os
import re
import statistics

CLIENT_BOUND = 90.0  # client CPU % from which a cell is marked as client-bound


def fmt(x):
    if x is None:
        return "-"
    a = abs(x)
    if a >= 1e6:
        return f"{x / 1e6:.2f}M"
    if a >= 1e4:
        return f"{x / 1e3:.1f}k"
    if a >= 100:
        return f"{x:.0f}"
    return f"{x:.1f}" if a >= 10 else f"{x:.2f}"


class Table:
    """Median per (kind, transport, key, loop) over the reps."""

    def __init__(self, results):
        self.runs = {}
        for r in results:
            self.runs.setdefault((r["kind"], r.get("transport"), r["key"], r["loop"]), []).append(r)

    def keys(self, kind, transport=None):
        seen = []
        for k, t, key, _ in self.runs:
            if k == kind and t == transport and key not in seen:
                seen.append(key)
        return seen

    def values(self, kind, transport, key, loop, field):
        return [r[field] for r in self.runs.get((kind, transport, key, loop), [])
                if r["status"] == "ok" and r.get(field) is not None]

    def median(self, kind, transport, key, loop, field):
        v = self.values(kind, transport, key, loop, field)
        return statistics.median(v) if v else None

    def cell(self, kind, transport, key, loop, field, base=None, show=fmt):
        runs = self.runs.get((kind, transport, key, loop), [])
        if not runs:
            return ""
        failed = sum(r["status"] == "fail" for r in runs)
        m = self.median(kind, transport, key, loop, field)
        if m is None:
            return "FAIL" if failed else "n/a"
        text = show(m)
        if base and loop != "ceiling":
            text += f" ({m / base:.2f}x)"
        if failed:
            text += f" [{failed}/{len(runs)} failed]"
        return text


def md_table(header, rows):
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "| " + " | ".join(str(c).ljust(w) for c, w in zip(cells, widths)) + " |"  # noqa: E731
    return "\n".join([line(header), "|" + "|".join("-" * (w + 2) for w in widths) + "|"] + [line(r) for r in rows])


def echo_sections(t, tr, loops, base, opts, py=""):
    keys = t.keys("echo", tr)
    sizes = []
    for k in keys:
        size = k.split("/")[1]
        if size not in sizes:
            sizes.append(size)
    rows_by = [(k, k.split("/")[1]) for k in keys if not k.startswith("ceiling/")]
    rows_by.sort(key=lambda kv: sizes.index(kv[1]))
    cols = loops + (["ceiling"] if any(k.startswith("ceiling/") for k in keys) else [])
    out = []
    specs = [
        ("requests/s", "rps", True),
        ("latency p50 / p99 (µs)", "p50_us", False),
        ("server CPU time per request (µs; lower is better)", "cpu_us_per_req", True),
    ]
    for title, field, ratio in specs:
        rows = []
        for key, size in rows_by:
            b = t.median("echo", tr, key, base, field) if (ratio and base) else None
            row = [key]
            for lp in cols:
                k = f"ceiling/{size}" if lp == "ceiling" else key
                if field == "p50_us":
                    p50, p99 = t.median("echo", tr, k, lp, "p50_us"), t.median("echo", tr, k, lp, "p99_us")
                    c = f"{p50:.0f} / {p99:.0f}" if p50 is not None else t.cell("echo", tr, k, lp, field)
                else:
                    c = t.cell("echo", tr, k, lp, field, b)
                    cli = t.median("echo", tr, k, lp, "client_cpu_pct")
                    if field == "rps" and cli is not None and cli >= CLIENT_BOUND:
                        c += " †"
                row.append(c)
            rows.append(row)
        out += [f"### {tr.upper()}: {title} ({py})", "", md_table(["mode/size"] + cols, rows), ""]
        if field == "rps":
            out += [f"† the client used ≥ {CLIENT_BOUND:.0f}% of its core: the server may be faster than shown. "
                    "`ceiling` = the pure-Rust single-threaded server, same client.", ""]
    return out


SUBJECT = "oxloop"
APPS = ("uvicorn", "aiohttp")
HTTP_METRICS = [("req/s", "rps", True), ("p50 / p99 µs", "p50_us", False), ("server µs/req", "cpu_us_per_req", True)]


def http_sections(t, loops, base, py):
    """One table per HTTP server: per request kind, requests/s, latency and
    the server's CPU per request, for every loop."""
    out = []
    for app in APPS:
        keys = t.keys("http", app)
        if not keys:
            continue
        rows = []
        for key in keys:
            for label, field, ratio in HTTP_METRICS:
                b = t.median("http", app, key, base, field) if (ratio and base) else None
                row = [f"{key}: {label}"]
                for lp in loops:
                    if field == "p50_us":
                        p50, p99 = t.median("http", app, key, lp, "p50_us"), t.median("http", app, key, lp, "p99_us")
                        row.append(f"{p50:.0f} / {p99:.0f}" if p50 is not None else t.cell("http", app, key, lp, field))
                    else:
                        c = t.cell("http", app, key, lp, field, b)
                        cli = t.median("http", app, key, lp, "client_cpu_pct")
                        row.append(c + (" †" if field == "rps" and cli is not None and cli >= CLIENT_BOUND else ""))
                rows.append(row)
        what = ("uvicorn + httptools, an ASGI app" if app == "uvicorn" else "aiohttp.web, two handlers")
        out += [f"## HTTP: {what} ({py})", "",
                "The native client in HTTP/1.1 keep-alive mode, one request in flight per connection; "
                "every answer's status, length and framing checked, bodies as --verify says. "
                "Ratios: loop / baseline (for µs/req below 1 is better).", "",
                md_table(["request: metric"] + loops, rows), ""]
    return out
GROUPS = [  # (title, kind, transport, field, higher is better)
    ("loop overhead, ops/s", "micro", None, "ops_per_s", True),
    ("echo TCP, requests/s", "echo", "tcp", "rps", True),
    ("echo Unix, requests/s", "echo", "unix", "rps", True),
    ("echo TCP, server CPU per request", "echo", "tcp", "cpu_us_per_req", False),
    ("echo Unix, server CPU per request", "echo", "unix", "cpu_us_per_req", False),
    ("echo TLS, requests/s", "echo", "tls", "rps", True),
    ("HTTP uvicorn, requests/s", "http", "uvicorn", "rps", True),
    ("HTTP aiohttp, requests/s", "http", "aiohttp", "rps", True),
    ("HTTP, p99 latency", "http", None, "p99_us", False),
    ("memory, RSS with idle connections", "memory", "tcp", "rss_mib", False),
]


def summary(t, loops, py=""):
    """oxloop against uvloop and the stdlib loop: geometric mean of the
    per-row ratios of each group, written so that above 1 is better."""
    others = [lp for lp in ("uvloop", "asyncio") if lp in loops]
    if SUBJECT not in loops or not others:
        return []
    rows = []
    for title, kind, tr, field, higher in GROUPS:
        trs = [tr] if tr or kind != "http" else APPS
        keys = [(x, k) for x in trs for k in t.keys(kind, x) if not k.startswith("ceiling/")]
        if not keys:
            continue
        row = [title]
        for other in others:
            ratios = []
            for x, k in keys:
                a, b = t.median(kind, x, k, SUBJECT, field), t.median(kind, x, k, other, field)
                if a and b:
                    ratios.append(a / b if higher else b / a)
            gm = statistics.geometric_mean(ratios) if ratios else None
            row.append(f"{gm:.2f}x ({len(ratios)}/{len(keys)} rows)" if gm else f"- (0/{len(keys)} rows)")
        rows.append(row)
    return [f"## Summary: oxloop ({py})", "",
            "Geometric mean over the rows of each group of oxloop's advantage (above 1 = oxloop better: "
            "faster, less CPU or less memory); rows where either loop failed are left out.", "",
            md_table(["group"] + [f"oxloop vs {o}" for o in others], rows), ""]


STATS = "oxloop+stats"

# The rows where the loop's own code is most of the cost: the goal there is
# 1.25x the best other loop (issue 9); elsewhere at least the best.
CORE_ROWS = {"call_soon", "call_later", "call_soon_threadsafe", "create_task"}
CORE_TARGET = 1.25
CEILING_TARGET = 0.95  # Protocol/Buffered echo: share of the pure-Rust server's rate
CEILING_MODES = ("protocol/", "buffered/")


def _target(kind, key):
    if kind == "micro" and key in CORE_ROWS:
        return CORE_TARGET
    if kind == "echo" and key.startswith("sockets/"):
        return CORE_TARGET
    return 1.0


def _client_bound(t, kind, tr, key, loop):
    cli = t.median(kind, tr, key, loop, "client_cpu_pct")
    return cli is not None and cli >= CLIENT_BOUND


def _verdict_metric(t, kind, tr, key, loops):
    """Requests/s, unless the client saturated its core for any loop of the
    row: then the server's CPU per request (the rate says little there)."""
    if kind == "echo" and any(_client_bound(t, kind, tr, key, lp) for lp in loops):
        return "cpu_us_per_req", False
    return {"micro": ("ops_per_s", True), "memory": ("rss_mib", False)}.get(kind, ("rps", True))


def best_peer(t, loops, py=""):
    """Every row: oxloop against the best of the other loops measured in the
    same run (the stdlib loop included), with the row's goal (issue 9) and
    whether it is met; for Protocol/Buffered echo also the share of the
    pure-Rust ceiling server."""
    others = [lp for lp in loops if lp not in (SUBJECT, STATS)]
    if SUBJECT not in loops or not others:
        return []
    rows = []
    sections = [("micro", None)] + [("echo", tr) for tr in ("tcp", "unix", "tls")]
    sections += [("http", app) for app in APPS] + [("memory", "tcp")]
    for kind, tr in sections:
        for key in t.keys(kind, tr):
            if key.startswith("ceiling/"):
                continue
            field, higher = _verdict_metric(t, kind, tr, key, loops)
            mine = t.median(kind, tr, key, SUBJECT, field)
            against = others
            if kind == "memory":  # the goal: RSS per idle connection <= uvloop's
                field, against = "kib_per_conn", [lp for lp in others if lp == "uvloop"] or others
                mine = t.median(kind, tr, key, SUBJECT, field)
            peers = {lp: t.median(kind, tr, key, lp, field) for lp in against}
            peers = {lp: v for lp, v in peers.items() if v}
            if not mine or not peers:
                continue
            best = (max if higher else min)(peers, key=peers.get)
            ratio = mine / peers[best] if higher else peers[best] / mine
            goal = _target(kind, key)
            name = " ".join(x for x in (kind, tr, key) if x)
            unit = {"cpu_us_per_req": "CPU/req", "kib_per_conn": "RSS per conn, vs uvloop"}.get(field, "")
            ceiling = ""
            if kind == "echo" and key.startswith(CEILING_MODES):
                ckey = "ceiling/" + key.split("/")[1]
                bound = _client_bound(t, kind, tr, ckey, "ceiling") or _client_bound(t, kind, tr, key, SUBJECT)
                cf, ch = ("cpu_us_per_req", False) if bound else ("rps", True)
                c, m = t.median(kind, tr, ckey, "ceiling", cf), t.median(kind, tr, key, SUBJECT, cf)
                if c and m:
                    share = m / c if ch else c / m
                    ceiling = f"{share:.0%}{' of CPU/req' if not ch else ''} ({'met' if share >= CEILING_TARGET else 'not met'})"
            rows.append([name + (f" ({unit})" if unit else ""), best, f"{ratio:.2f}x",
                         f">= {goal:.2f}x", "met" if ratio >= goal else "not met", ceiling])
    if not rows:
        return []
    met = sum(r[4] == "met" for r in rows)
    return [f"## oxloop against the best other loop, row by row ({py})", "",
            "Ratio = oxloop / the best other loop of the row in this run (above 1 = oxloop better; for CPU "
            "per request and memory, best / oxloop). Echo rows where the client saturated its core are judged "
            f"by the server's CPU per request. Goal: {CORE_TARGET}x on call_soon, call_later, "
            "call_soon_threadsafe, create_task and sockets mode, otherwise at least the best; Protocol and "
            f"Buffered echo also at >= {CEILING_TARGET:.0%} of the pure-Rust ceiling server. "
            f"{met} of {len(rows)} rows meet their goal.", "",
            md_table(["row", "best other", "oxloop / best", "goal", "", "of ceiling"], rows), ""]



def stats_cost(t, loops):
    """What loop.stats() costs: oxloop with stats on against oxloop, per
    group (geometric mean; below 1 = slower with stats)."""
    if SUBJECT not in loops or STATS not in loops:
        return []
    rows = []
    for title, kind, tr, field, higher in GROUPS:
        ratios = []
        for k in t.keys(kind, tr):
            if k.startswith("ceiling/"):
                continue
            a, b = t.median(kind, tr, k, STATS, field), t.median(kind, tr, k, SUBJECT, field)
            if a and b:
                ratios.append(a / b if higher else b / a)
        if ratios:
            gm = statistics.geometric_mean(ratios)
            rows.append([title, f"{gm:.3f}x", f"{min(ratios):.3f}x", str(len(ratios))])
    text = ("`oxloop+stats` is oxloop with `loop.stats()` on (`new_event_loop(stats=True)`); "
            "its advantage over plain oxloop per group (1 = free, below 1 = the cost; "
            "worst row shown too). Instruction counts, steadier than these timings: "
            "`benchmarks/cg_overhead.py`; stats off and on timed interleaved in one process: "
            "`benchmarks/stats_ab.py`.")
    return ["## Cost of stats: oxloop+stats vs oxloop", "", text, "",
            md_table(["group", "geometric mean", "worst row", "rows"], rows), ""]


def render(raw):
    meta, opts, results = raw["meta"], raw["options"], raw["results"]
    loops = meta["loops"]
    base = opts["baseline"] if opts["baseline"] in loops else None
    t = Table(results)
    A = []
    A += [f"# oxloop benchmarks, {meta['started']}", ""]
    A.append(f"- machine: {meta['machine']}; {meta['python']}")
    A.append("- loops: " + "; ".join(f"**{k}** = {v}" for k, v in meta["impls"].items()))
    if meta.get("skipped"):
        A.append("- skipped (not importable): " + "; ".join(f"{k}: {v}" for k, v in meta["skipped"].items()))
    if meta.get("skipped_apps"):
        A.append("- HTTP benchmarks skipped (server not installed): "
                 + "; ".join(f"{k}: {v}" for k, v in meta["skipped_apps"].items()))
    A.append(f"- `{meta['command']}`: {opts['reps']} rep(s), loops interleaved and rotated per rep; "
             f"median shown; echo {opts['conns']} connections, {opts['duration']} s measured after "
             f"{opts['warmup']} s warm-up; server on CPU {opts['server_cpu']}, client on CPU {opts['client_cpu']}; "
             f"took {meta.get('elapsed_s', '?')} s")
    A.append(f"- ratio in parentheses: loop / {base or 'nothing (baseline not run)'} in this run")
    A.append("")
    py = meta["python"]
    A += summary(t, loops, py)
    A += best_peer(t, loops, py)
    A += stats_cost(t, loops)
    if t.keys("micro"):
        A += [f"## Loop overhead (no network): operations/s ({py})", ""]
        rows = [[k] + [t.cell("micro", None, k, lp, "ops_per_s", t.median("micro", None, k, base, "ops_per_s") if base else None)
                       for lp in loops] for k in t.keys("micro")]
        A += [md_table(["benchmark"] + loops, rows), ""]
    for tr in ("tcp", "unix", "tls"):
        if t.keys("echo", tr):
            note = (["Protocol-mode echo server with `ssl=` (a certificate made for the run); the client speaks "
                     "TLS 1.3 (rustls) and checks the echoed bytes as over plain TCP.", ""] if tr == "tls" else [])
            A += [f"## Echo over {tr.upper()} ({py})", ""] + note + echo_sections(t, tr, loops, base, opts, py)
    A += http_sections(t, loops, base, py)
    if t.keys("memory", "tcp"):
        n = opts["idle_conns"]
        A += [f"## Memory: server RSS holding {n:,} idle TCP connections (MiB; lower is better; {py})", "",
              "Cell: RSS with the connections open (ratio to the baseline), then the growth per connection.", ""]
        rows = []
        for k in t.keys("memory", "tcp"):
            b = t.median("memory", "tcp", k, base, "rss_mib") if base else None
            row = [k]
            for lp in loops:
                c = t.cell("memory", "tcp", k, lp, "rss_mib", b)
                per = t.median("memory", "tcp", k, lp, "kib_per_conn")
                row.append(c + (f", +{per:.1f} KiB/conn" if per is not None else ""))
            rows.append(row)
        A += [md_table(["server mode"] + loops, rows), ""]
    A += noise_section(results, opts, meta)
    warned = grouped([r for r in results if r.get("warning")], "warning")
    if warned:
        A += ["## Warnings (not failures)", ""]
        A += [f"- **{loop}** {', '.join(where)}: {r['warning']}" for (loop, _), (where, _, r) in warned.items()]
        A.append("")
    A += ["## FAILURES", ""]
    failed = grouped([r for r in results if r["status"] == "fail"], "error")
    if not failed:
        A.append("none")
    for (loop, _), (where, n, r) in failed.items():
        A.append(f"- **{loop}**, {n} run(s) in {', '.join(where)}: {r.get('error')}")
        detail = (r.get("detail") or "").strip()
        if detail:
            A += ["", "  ```"] + ["  " + ln for ln in detail.splitlines()[-15:]] + ["  ```"]
    return "\n".join(A) + "\n"


def label(r):
    return " ".join(x for x in (r["kind"], r.get("transport"), r["key"]) if x)


def grouped(runs, field):
    """{(loop, message with numbers blanked): (places, count, first run)}:
    the same problem in many cells is listed once."""
    out = {}
    for r in runs:
        ident = (r["loop"], re.sub(r"\d+", "#", str(r.get(field))))
        where, n, first = out.get(ident, ([], 0, r))
        if label(r) not in where:
            where.append(label(r))
        out[ident] = (where, n + 1, first)
    return out


def noise_section(results, opts, meta):
    measured = [r for r in results if r["status"] == "ok" and r["kind"] != "memory"]
    disturbed = [r for r in measured if r["foreign_pct"] > opts["noise"]]
    retried = [r for r in results if r.get("attempts", 1) > 1]
    out = ["## Noise", "",
           f"Other processes' CPU was recorded during every measurement; {len(retried)} of {len(measured)} were "
           f"run again for exceeding {opts['noise']:.0f}% of a core ({meta.get('retry_seconds', 0)} s of re-runs, "
           f"budget {opts['retry_budget']:.0f} s); {len(disturbed)} kept runs were still disturbed"
           + (":" if disturbed else ".")]
    for r in disturbed[:20]:
        out.append(f"- {r['loop']} {label(r)} rep {r['rep'] + 1}: "
                   f"{r['foreign_pct']:.0f}%")
    if len(disturbed) > 20:
        out.append(f"- ... and {len(disturbed) - 20} more")
    ceil = {}
    for r in results:
        if r["loop"] == "ceiling" and r["status"] == "ok":
            ceil.setdefault(f"{r['transport']} {r['key'].split('/')[1]}", []).append(fmt(r["rps"]))
    if ceil and opts["reps"] > 1:
        out += ["", "Ceiling server's req/s in rep 1, 2, ... (drift of the machine itself):"]
        out += [f"- {k}: {', '.join(v)}" for k, v in ceil.items()]
    return out + [""]


def chart(raw, path):
    """Ratios to the baseline, one panel per kind of measurement."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart"
    meta, opts = raw["meta"], raw["options"]
    loops, base = meta["loops"], raw["options"]["baseline"]
    if base not in loops:
        return f"no chart: the baseline {base} was not run"
    t = Table(raw["results"])
    panels = [("micro: ops/s", "micro", None, "ops_per_s")]
    panels += [(f"echo {tr.upper()}: requests/s", "echo", tr, "rps") for tr in ("tcp", "unix", "tls")]
    panels += [(f"HTTP {app}: requests/s", "http", app, "rps") for app in APPS]
    panels += [(f"memory: RSS, {opts['idle_conns']:,} idle conns (lower is better)", "memory", "tcp", "rss_mib")]
    panels = [p for p in panels if [k for k in t.keys(p[1], p[2]) if not k.startswith("ceiling/")]]
    if not panels:
        return "no chart: nothing measured"
    heights = [len([k for k in t.keys(p[1], p[2]) if not k.startswith("ceiling/")]) for p in panels]
    fig, axes = plt.subplots(len(panels), 1, figsize=(9, 1.2 + 0.32 * len(loops) * sum(heights) / 2.2 + len(panels)),
                             gridspec_kw={"height_ratios": heights}, squeeze=False)
    bar = 0.8 / len(loops)
    for ax, (title, kind, tr, field), n in zip(axes[:, 0], panels, heights):
        keys = [k for k in t.keys(kind, tr) if not k.startswith("ceiling/")]
        for i, lp in enumerate(loops):
            ratios = []
            for y, k in enumerate(keys):
                m, b = t.median(kind, tr, k, lp, field), t.median(kind, tr, k, base, field)
                ratios.append(m / b if m is not None and b else 0)
                if m is None:  # say why there is no bar
                    ax.text(0.01, y + i * bar, t.cell(kind, tr, k, lp, field) or "-", va="center",
                            fontsize=6, transform=ax.get_yaxis_transform())
            ax.barh([y + i * bar for y in range(n)], ratios, height=bar, label=lp)
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_yticks([y + bar * (len(loops) - 1) / 2 for y in range(n)])
        ax.set_yticklabels(keys, fontsize=8)
        ax.invert_yaxis()
        ax.set_title(f"{title}, ratio to {base}", fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[0, 0].legend(fontsize=8, loc="lower right")
    fig.suptitle(f"oxloop benchmarks {meta['started']}, {meta['python']} (median of {opts['reps']} rep(s))", fontsize=11)
    fig.tight_layout(rect=(0, 0, 1, 0.98))
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_all(raw, outdir):
    """Write report.md and chart.png into ``outdir``; return the Markdown."""
    text = render(raw)
    problem = chart(raw, os.path.join(outdir, "chart.png"))
    if problem:
        text += f"\n({problem})\n"
    with open(os.path.join(outdir, "report.md"), "w") as f:
        f.write(text)
    return text
