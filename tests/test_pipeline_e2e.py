"""End to end: the tiny config through Snakemake, then the rerun table of docs/USAGE.md.

One real run (module fixture); every edit below is then checked with a dry run, which must
list exactly the jobs that depend on the edited config keys.
"""

from __future__ import annotations

import collections
import copy
import html
import json
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any, Callable

import pytest
import torch
from PIL import Image, ImageStat

from multibeta.bundle.manifest import file_entries
from multibeta.utils.io import file_sha256
from multibeta.utils.tensorfile import read_tensor_file, write_tensor_file

from smk import TINY, load_yaml, planned_jobs, snakemake, write_config

pytestmark = pytest.mark.slow

RUNS = 5  # sampling.runs in tests/configs/tiny.yaml
VARIANTS = 3


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    workdir = tmp_path_factory.mktemp("tiny")
    config = load_yaml(TINY)
    path = write_config(workdir / "config.yaml", config)
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=path, timeout=1200)
    return workdir, config


def test_outputs_and_report(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = tiny_run
    base = workdir / "results" / config["experiment"]
    doc = json.loads((base / "report" / "metrics.json").read_text())
    assert set(doc["generation"]) == {r["name"] for r in config["sampling"]["runs"]}
    for run in doc["generation"].values():
        assert run["factor_classifier"]["fid"] >= 0 and run["timing"]["samples_per_s"] > 0
    levels = doc["levels"]["levels"]
    assert [lvl["t"] for lvl in levels] == sorted(lvl["t"] for lvl in levels)
    assert levels[0]["t"] == 0.0 and levels[-1]["t"] == 1.0
    assert all("mig" in lvl and "mse" in lvl for lvl in levels)
    # the ICA basis of each scored level comes from the config's FastICA starts
    assert {lvl["ica_fit_restarts"] for lvl in levels if "ica_fit_restarts" in lvl} == {config["metrics"]["ica"]["restarts"]}
    assert "1" in doc["baselines"]
    report = (base / "report" / "report.md").read_text()
    assert "| ddim_10 |" in report and "## Reconstruction and disentanglement per level" in report
    for png in ("report/metrics_vs_beta.png", "figures/sharpening.png", "figures/traversal_pca.png",
                "vae/plots/sigma_vs_beta.png", "samples/ancestral_100/grid.png"):
        assert (base / png).stat().st_size > 1000, png
    assert (base / "benchmarks" / "train_vae.tsv").exists()
    assert (base / "logs" / "train_vae.log").read_text().count("runtime: device=cpu") == 1
    assert not (workdir / "results" / ".multibeta.lock").exists()  # released when the run ended


def test_nothing_to_do_after_a_run(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    workdir, config = tiny_run
    path = write_config(workdir / "same.yaml", config)
    assert planned_jobs(workdir, path) == collections.Counter()


# --- the Snakemake HTML report, opened in headless Chromium -------------------------------------

# Figures per report category for the tiny run (every PNG the experiment writes, plus the two
# report downloads); the categories are the pipeline's stages in order.
REPORT_ENTRIES = {"1. VAE": 4, "2. Diffusion": VARIANTS, "3. Sampling": RUNS, "4. Editing": 4 + 5,
                  "5. Metrics": 1, "6. Report": 2}

# Walks the report's own UI like a reader: each category from the menu, each row's eye button;
# for a figure it waits for the <img> to load and measures it, then leaves one sampling grid
# on screen with its caption open for the screenshot. The result goes into <pre id=...>.
_REPORT_PROBE = r"""<script>
(async function () {
  const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
  const out = {entries: {}, images: [], downloads: [], errors: [], caption: ""};
  for (let i = 0; i < 200 && !(document.querySelector("nav") && typeof app !== "undefined"); i++) await sleep(50);
  const nav = document.querySelector("nav");
  const link = (text) => {
    const a = [...nav.querySelectorAll("a")].find((x) => x.textContent.trim() === text);
    if (!a) throw new Error("no link '" + text + "' in the menu");
    return a;
  };
  const open = async (cat, sub) => {
    app.setView({navbarMode: "menu"});
    await sleep(50);
    link(cat).click();
    await sleep(50);
    if (Object.keys(categories[cat]).length > 1) { link(sub).click(); await sleep(50); }
    return [...nav.querySelectorAll("table tbody tr")];
  };
  const show = async (row) => {
    row.querySelector("td:last-child a").click();
    await sleep(50);
    const img = [...document.querySelectorAll("#app img")].find((x) => !nav.contains(x));
    for (let w = 0; img && w < 200 && !(img.complete && img.naturalWidth > 0); w++) await sleep(20);
    return img;
  };
  try {
    for (const cat of Object.keys(categories).sort()) {
      out.entries[cat] = 0;
      for (const sub of Object.keys(categories[cat]).sort()) {
        const byLabel = new Map(categories[cat][sub].map((p) => [Object.values(results[p].labels).join("|"), p]));
        const n = (await open(cat, sub)).length;
        out.entries[cat] += n;
        for (let i = 0; i < n; i++) {
          const row = nav.querySelectorAll("table tbody tr")[i];
          const cells = [...row.querySelectorAll("td")];
          const label = cells.slice(0, -1).map((td) => td.textContent).join("|");
          const path = byLabel.get(label);
          const href = cells[cells.length - 1].querySelector("a").getAttribute("href");
          if (href !== "#") { out.downloads.push({label, path, href: href.slice(0, 40)}); continue; }
          const img = await show(row);
          if (!img || !img.naturalWidth) { out.errors.push("no image shown for " + label); continue; }
          const canvas = document.createElement("canvas");
          canvas.width = img.naturalWidth;
          canvas.height = img.naturalHeight;
          const ctx = canvas.getContext("2d");
          ctx.drawImage(img, 0, 0);
          const px = ctx.getImageData(0, 0, canvas.width, canvas.height).data;
          let sum = 0, sq = 0;
          for (let k = 0; k < px.length; k += 4) {
            const v = (px[k] + px[k + 1] + px[k + 2]) / 3;
            sum += v;
            sq += v * v;
          }
          const mean = sum / (px.length / 4), box = img.getBoundingClientRect();
          out.images.push({cat, label, path, src: img.src.slice(0, 22), width: img.naturalWidth,
                           shown: [box.width, box.height], std: Math.sqrt(Math.max(sq / (px.length / 4) - mean * mean, 0)),
                           right_image: path !== undefined && img.src === results[path].data_uri});
        }
      }
    }
    const cat = FINAL_CATEGORY, rows = await open(cat, Object.keys(categories[cat]).sort()[0]);
    await show(rows[0]);
    [...rows[0].querySelectorAll("td:last-child a")][1].click();  // the (i): the caption
    await sleep(100);
    out.caption = nav.textContent;
  } catch (err) {
    out.errors.push(String((err && err.stack) || err));
  }
  const pre = document.createElement("pre");
  pre.id = "multibeta-probe";
  pre.hidden = true;
  pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>
"""


def _chromium() -> str:
    """Chromium's executable; skips the test where there is none, unless MULTIBETA_CHROMIUM=1 (CI)."""
    for name in ("chromium", "chromium-browser"):
        if path := shutil.which(name):
            return path
    if os.environ.get("MULTIBETA_CHROMIUM") == "1":
        pytest.fail("MULTIBETA_CHROMIUM=1 but no chromium on PATH (.ci/run installs Debian's package `chromium`)")
    pytest.skip("no chromium on PATH (Debian: apt-get install chromium)")


def _report_json(text: str, name: str) -> Any:
    """The JSON the report embeds as ``<script id="NAME"> var NAME = {...};``."""
    match = re.search(rf'<script id="{name}">\s*var {name} = (.*);\n', text)
    assert match, f"no `var {name}` in the report"
    return json.loads(match.group(1))


def _open_in_chromium(browser: str, report: Path, folder: Path, final_category: str) -> tuple[dict[str, Any], Path]:
    """Load the report with the probe in headless Chromium: (the probe's findings, a screenshot)."""
    head, body_end, tail = report.read_text().rpartition("</body>")
    probe = folder / "probe.html"
    probe.write_text(head + _REPORT_PROBE.replace("FINAL_CATEGORY", json.dumps(final_category)) + body_end + tail)
    shot = folder / "report.png"
    # virtual time: the page's timers run as fast as the CPU allows, the dump waits for the probe
    cmd = [browser, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
           f"--user-data-dir={folder / 'chromium-profile'}", "--window-size=1400,900",
           "--virtual-time-budget=600000", f"--screenshot={shot}", "--dump-dom", probe.as_uri()]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240)
    match = re.search(r'<pre id="multibeta-probe"[^>]*>(.*?)</pre>', proc.stdout, re.S)
    assert match, f"the report's probe did not finish (exit {proc.returncode}):\n{proc.stderr[-3000:]}"
    return json.loads(html.unescape(match.group(1))), shot


def test_html_report_shows_every_figure(tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    """`snakemake --report` of the tiny run: every figure registered, captioned, and rendered by Chromium."""
    browser = _chromium()
    workdir, config = tiny_run
    report = tmp_path / "report.html"
    snakemake(workdir, "--report", str(report), configfile=workdir / "config.yaml", timeout=300)
    text = report.read_text()
    categories, results = _report_json(text, "categories"), _report_json(text, "results")
    assert {cat: sum(map(len, subs.values())) for cat, subs in categories.items()} == REPORT_ENTRIES
    exp = config["experiment"]
    written = {p.relative_to(workdir).as_posix() for p in (workdir / "results" / exp).rglob("*.png")
               if "bundle" not in p.parts}  # the bundle holds copies of the loss curves
    assert {p for p in results if p.endswith(".png")} == written, "a PNG of the run is not in the report"
    for path, result in results.items():
        caption = result["caption"]
        assert caption and "{{" not in caption and "system-message" not in caption, (path, caption)
        if path.endswith(".png"):
            assert "What to see" in caption and result["data_uri"].startswith("data:image/png;"), path

    found, shot = _open_in_chromium(browser, report, tmp_path, final_category="3. Sampling")
    assert found["errors"] == []
    assert found["entries"] == REPORT_ENTRIES  # the rows the reader sees per category
    figures = {img["path"]: img for img in found["images"]}
    assert set(figures) == written
    for path, img in figures.items():
        assert img["right_image"] and img["src"].startswith("data:image/png"), path
        assert img["width"] > 100 and min(img["shown"]) > 50, (path, img)  # decoded, and on screen
        assert img["std"] > 5, (path, img)  # not a blank image
    assert {d["path"] for d in found["downloads"]} == {f"results/{exp}/report/report.md",
                                                         f"results/{exp}/report/metrics.json"}
    assert "What to see" in found["caption"] and "ancestral_100" in found["caption"]
    screen = Image.open(shot).convert("L")
    assert screen.size == (1400, 900), screen.size
    assert ImageStat.Stat(screen).stddev[0] > 20 and len(screen.getcolors(256)) > 20, "blank screenshot"


def _set(config: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, last = dotted.split(".")
    node = config
    for key in parents:
        node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
    node[last] = value


def _add_run(config: dict[str, Any]) -> None:
    config["sampling"]["runs"].append({"name": "ddim_20", "steps": 20, "eta": 0.0, "n_samples": 32, "batch_size": 32})


DOWNSTREAM_OF_DIFFUSION = {"train_diffusion": VARIANTS, "sample": RUNS, "sharpen": 1, "traverse": 1,
                           "edit_directions": 1, "generation_metrics": RUNS, "report": 1,
                           "export_bundle": 1, "all": 1}
DOWNSTREAM_OF_VAE = {**DOWNSTREAM_OF_DIFFUSION, "train_vae": 1, "vae_plots": 1, "train_vae_baseline": 1,
                     "cache_latents": 1, "level_metrics": 1, "baseline_metrics": 1}

# docs/USAGE.md's table "you change X -> these steps rerun".
RERUN_TABLE: list[tuple[str, Callable[[dict[str, Any]], None], dict[str, int]]] = [
    ("compute.cpu_threads", lambda c: _set(c, "compute.cpu_threads", 2), {}),
    ("compute.device", lambda c: _set(c, "compute.device", "auto"), {}),
    ("metrics.mig.num_bins", lambda c: _set(c, "metrics.mig.num_bins", 10),
     {"level_metrics": 1, "baseline_metrics": 1, "report": 1, "export_bundle": 1, "all": 1}),
    ("metrics.ica.restarts", lambda c: _set(c, "metrics.ica.restarts", 2),
     {"level_metrics": 1, "baseline_metrics": 1, "traverse": 1, "edit_directions": 1, "report": 1,
      "export_bundle": 1, "all": 1}),
    ("metrics.generation.kid_subsets", lambda c: _set(c, "metrics.generation.kid_subsets", 5),
     {"reference_features": 1, "generation_metrics": RUNS, "report": 1, "export_bundle": 1, "all": 1}),
    ("sampling.runs[1].steps", lambda c: _set(c, "sampling.runs.1.steps", 12),
     {"sample": 1, "generation_metrics": 1, "report": 1, "export_bundle": 1, "all": 1}),
    ("sampling.runs += ddim_20", _add_run, {"sample": 1, "generation_metrics": 1, "report": 1, "export_bundle": 1, "all": 1}),
    ("sampling.directions.t_b", lambda c: _set(c, "sampling.directions.t_b", 0.75),
     {"edit_directions": 1, "report": 1, "export_bundle": 1, "all": 1}),
    ("sampling.sharpen.steps", lambda c: _set(c, "sampling.sharpen.steps", 10),
     {"sharpen": 1, "report": 1, "export_bundle": 1, "all": 1}),
    ("diffusion.lambda_delta", lambda c: _set(c, "diffusion.lambda_delta", 0.5), DOWNSTREAM_OF_DIFFUSION),
    ("cache.dtype", lambda c: _set(c, "cache.dtype", "float16"),
     {**DOWNSTREAM_OF_DIFFUSION, "cache_latents": 1, "level_metrics": 1}),
    ("vae.lr", lambda c: _set(c, "vae.lr", 0.002), DOWNSTREAM_OF_VAE),
    ("vae.baseline_betas += 3", lambda c: _set(c, "vae.baseline_betas", [1.0, 3.0]),
     {"train_vae_baseline": 1, "baseline_metrics": 1, "report": 1, "export_bundle": 1, "all": 1}),
]


@pytest.mark.parametrize(("name", "edit", "expected"), RERUN_TABLE, ids=[r[0] for r in RERUN_TABLE])
def test_config_edit_reruns_exactly_the_dependent_steps(
    tiny_run: tuple[Path, dict[str, Any]], name: str, edit: Callable, expected: dict[str, int]
) -> None:
    workdir, config = tiny_run
    edited = copy.deepcopy(config)
    edit(edited)
    path = write_config(workdir / "edited.yaml", edited)
    assert planned_jobs(workdir, path) == collections.Counter(expected), name


def test_sweep_shares_the_dataset_and_compares_experiments(tiny_run: tuple[Path, dict[str, Any]]) -> None:
    """A two-experiment sweep (the tiny experiment, already run, plus one more seed)."""
    workdir, config = tiny_run
    swept = copy.deepcopy(config)
    # The second experiment is kept small (one variant, one sampling run, no baseline): what is
    # tested is the sweep's wiring, not the tiny pipeline again.
    swept["sweep"] = [{"name": "tiny-seed1", "overrides": {
        "vae.seed": 1, "diffusion.seed": 1, "vae.baseline_betas": [], "diffusion.variants": ["multibeta"],
        "sampling.runs": [config["sampling"]["runs"][1]]}}]
    path = write_config(workdir / "sweep.yaml", swept)
    jobs = planned_jobs(workdir, path)
    assert jobs["prepare_data"] == 0 and jobs["train_vae"] == 1 and jobs["sweep_report"] == 1
    assert jobs["train_diffusion"] == 1 and jobs["sample"] == 1 and jobs["train_vae_baseline"] == 0
    snakemake(workdir, "--cores", "2", "--resources", "gpu=1", configfile=path, timeout=1200)
    results = workdir / "results"
    for exp in (config["experiment"], "tiny-seed1"):
        assert (results / exp / "report" / "report.md").exists()
    assert len(list((results / "datasets").iterdir())) == 1
    table = (results / "sweep_report.md").read_text()
    assert "| tiny |" in table and "| tiny-seed1 |" in table


# ------------------------------------------------------------------------------------- bundles

_BUNDLE_PROBE = r"""
import json, sys
import numpy as np, torch
from multibeta.api import MultiBeta
from multibeta.core.config import from_section
from multibeta.sampling.config import SampleRunConfig
from multibeta.sampling.store import read_samples

bundle, samples_dir = sys.argv[1], sys.argv[2]
mb = MultiBeta.load(bundle)
out = {"runs": {}, "version_warnings": mb.bundle.version_warnings}
for entry in mb.bundle.config["sampling"]["runs"]:
    run = from_section(SampleRunConfig, entry, "run")
    if run.variant != mb.variant:
        continue
    ref = read_samples(f"{samples_dir}/{run.name}/samples.h5")
    z = mb.sample_latents(run.n_samples, run.sampler(), prior=run.prior, final_mean=run.final_mean)
    images = mb.decode(z, 0.0)
    out["runs"][run.name] = {
        "latents_equal": bool(torch.equal(z, torch.as_tensor(ref["latents"]))),
        "image_max_diff": float((images * 255 - torch.as_tensor(ref["images"]).float()).abs().max()),
    }
first = next(r for r in mb.bundle.config["sampling"]["runs"] if r["variant"] == mb.variant)
out["default_reproduces_first_run"] = bool(torch.equal(
    mb.sample_latents(first["n_samples"]),
    torch.as_tensor(read_samples(f"{samples_dir}/{first['name']}/samples.h5")["latents"])))
x = torch.as_tensor(ref["images"][:2]).float() / 255
sharp = mb.sharpen(x, 0.5)
path = mb.interpolate(x[0], x[1], 0.5, 5)
direction, unit = mb.bundle.direction("attribute:scale")
edited = mb.edit(x, direction, 2 * unit, 0.5)
out["shapes"] = [list(sharp.shape), list(path.shape), list(edited.shape)]
out["in_range"] = all(float(t.min()) >= 0 and float(t.max()) <= 1 for t in (sharp, path, edited))
out["ends"] = float((path[0] - mb.sharpen(x[:1], 0.5)[0]).abs().max())
print(json.dumps(out))
"""


def _multibeta_cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    exe = str(Path(os.sys.executable).with_name("multibeta"))
    return subprocess.run([exe, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


_CLI_BATCH = r"""
import contextlib, io, json, sys
from multibeta.cli import main
results = []
for argv in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code
    results.append([code, err.getvalue()])
print(json.dumps(results))
"""


def _multibeta_cli_batch(commands: list[list[str]], cwd: Path) -> list[tuple[int, str]]:
    """``multibeta`` commands run by the CLI's ``main`` in one fresh process (one import of
    torch for all): ``[(exit status, stderr)]`` in order."""
    proc = subprocess.run([os.sys.executable, "-c", _CLI_BATCH, json.dumps(commands)], cwd=cwd,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [(int(code), err) for code, err in json.loads(proc.stdout.strip().splitlines()[-1])]


def test_bundle_reproduces_the_pipeline_in_a_fresh_process(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    workdir, config = tiny_run
    base = workdir / "results" / config["experiment"]
    probe = tmp_path / "probe.py"
    probe.write_text(_BUNDLE_PROBE)
    proc = subprocess.run([os.sys.executable, str(probe), str(base / "bundle"), str(base / "samples")],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout.strip().splitlines()[-1])
    multibeta_runs = {r["name"] for r in config["sampling"]["runs"] if r.get("variant", "multibeta") == "multibeta"}
    assert set(found["runs"]) == multibeta_runs and found["version_warnings"] == []
    for name, run in found["runs"].items():
        assert run["latents_equal"], name  # bit-identical to the pipeline's samples on the CPU
        assert run["image_max_diff"] <= 1.0, (name, run)  # the same images, up to uint8 rounding
    assert found["shapes"] == [[2, 1, 64, 64], [5, 1, 64, 64], [2, 1, 64, 64]] and found["in_range"]
    assert found["ends"] == 0.0  # the interpolation starts at the first image's sharpening
    assert found["default_reproduces_first_run"]  # defaults: the experiment's first run


def test_cli_uses_the_bundle_and_refuses_a_damaged_one(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    workdir, config = tiny_run
    bundle = workdir / "results" / config["experiment"] / "bundle"
    info = _multibeta_cli("info", str(bundle), cwd=tmp_path)
    assert info.returncode == 0 and "directions attribute (fitted at t_b=0.5): shape, scale" in info.stdout, info.stderr
    sample = _multibeta_cli("sample", str(bundle), "-n", "8", "--steps", "5", "--out", "s.png",
                            "--tensor", "s.pt", cwd=tmp_path)
    assert sample.returncode == 0, sample.stderr
    assert Image.open(tmp_path / "s.png").size[0] > 100
    for i, img in enumerate(torch.load(tmp_path / "s.pt")[:2]):
        Image.fromarray((img[0].numpy() * 255).astype("uint8")).save(tmp_path / f"in{i}.png")
    for args in (["sharpen", "in0.png", "in1.png", "--t-b", "0.5"],
                 ["interpolate", "in0.png", "in1.png", "-n", "4"],
                 ["edit", "in0.png", "--direction", "attribute:scale", "--amounts", "-1", "1"]):
        done = _multibeta_cli(args[0], str(bundle), *args[1:], "--steps", "5", "--out", f"{args[0]}.png",
                              cwd=tmp_path)
        assert done.returncode == 0 and (tmp_path / f"{args[0]}.png").stat().st_size > 1000, done.stderr
    bad = _multibeta_cli("edit", str(bundle), "in0.png", "--direction", "attribute:colour", cwd=tmp_path)
    assert bad.returncode == 2 and "attribute: shape, scale" in bad.stderr
    damaged = tmp_path / "damaged"
    shutil.copytree(bundle, damaged)
    with open(damaged / "vae.safetensors", "r+b") as fh:
        fh.seek(100)
        byte = fh.read(1)
        fh.seek(100)
        fh.write(bytes([byte[0] ^ 0xFF]))
    refused = _multibeta_cli("sample", str(damaged), "-n", "2", cwd=tmp_path)
    assert refused.returncode == 2 and "vae.safetensors: SHA-256 differs" in refused.stderr, refused.stderr
    missing = _multibeta_cli("info", str(tmp_path / "nowhere"), cwd=tmp_path)
    assert missing.returncode == 2 and "no bundle at" in missing.stderr
    # a consistent manifest, but a denoiser trained on another VAE's latents
    foreign = tmp_path / "foreign"
    shutil.copytree(bundle, foreign)
    state = read_tensor_file(foreign / "denoisers" / "multibeta.safetensors")
    write_tensor_file({**state, "vae_sha256": "0" * 64}, foreign / "denoisers" / "multibeta.safetensors")
    manifest = json.loads((foreign / "manifest.json").read_text())
    manifest["files"] = file_entries(foreign)
    (foreign / "manifest.json").write_text(json.dumps(manifest))
    mismatched = _multibeta_cli("sample", str(foreign), "-n", "2", cwd=tmp_path)
    assert mismatched.returncode == 2 and "denoisers/multibeta.safetensors does not belong" in mismatched.stderr


def test_an_experiment_started_from_a_bundle_trains_nothing(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    workdir, config = tiny_run
    bundle = workdir / "results" / config["experiment"] / "bundle"
    started = {**copy.deepcopy(config), "experiment": "from_bundle", "bundle": str(bundle)}
    overlapping = write_config(tmp_path / "overlapping.yaml", started)  # still sets vae, data, ...
    proc = snakemake(tmp_path, "-n", configfile=overlapping, check=False)
    assert proc.returncode != 0 and "takes its ['data', 'vae', 'cache', 'diffusion'] sections" in proc.stderr + proc.stdout
    for section in ("data", "vae", "cache", "diffusion"):
        del started[section]  # they come from the bundle
    jobs = planned_jobs(tmp_path, write_config(tmp_path / "from_bundle.yaml", started))
    assert not {"train_vae", "train_vae_baseline", "train_diffusion"} & set(jobs), jobs
    assert jobs["verify_bundle"] == 1 and jobs["sample"] == RUNS and jobs["report"] == 1
    assert jobs["cache_latents"] == 1 and jobs["edit_directions"] == 1
    missing = {**started, "bundle": str(tmp_path / "no_bundle")}
    proc = snakemake(tmp_path, "-n", configfile=write_config(tmp_path / "missing.yaml", missing), check=False)
    assert proc.returncode != 0 and "invalid config at 'bundle'" in proc.stderr + proc.stdout



# ------------------------------------------------------------------- bundles from someone else


class _Payload:
    """Pickles to a call of os.system that creates ``marker`` (if anything ever unpickles it)."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _crafted_header(path: Path, marker: Path) -> None:
    """Rewrite the tensor file ``path`` with code (a pickle, a Python line) in its header."""
    import base64
    import pickle
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    header["__metadata__"]["pickle"] = base64.b64encode(pickle.dumps(_Payload(marker))).decode()
    header["__metadata__"]["code"] = f"__import__('os').system('touch {marker}')"
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _crafted_record(path: Path, marker: Path) -> None:
    """Rewrite the tensor file ``path`` with a valid header whose JSON record names code: an
    extra architecture key for a model, a kind that is a Python line for a table."""
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    record = json.loads(header["__metadata__"]["multibeta"])
    if "arch" in record:
        record["arch"]["__reduce__"] = ["os.system", f"touch {marker}"]
    else:
        record["kind"] = f"__import__('os').system('touch {marker}')"
    header["__metadata__"]["multibeta"] = json.dumps(record)
    text = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])


def _planted_variants(bundle: Path, outside: Path, marker: Path) -> dict[str, tuple[Callable, str]]:
    """``{name: (plant(copy) -> extra manifest entries, file the refusal must name)}``."""
    tensor_files = sorted(rel for rel in json.loads((bundle / "manifest.json").read_text())["files"]
                          if rel.endswith(".safetensors"))
    assert {"vae.safetensors", "latent_space.safetensors", "directions.safetensors",
            "denoisers/multibeta.safetensors"} <= set(tensor_files)

    def pickled(rel):
        return lambda root: torch.save({"weights": _Payload(marker)}, root / rel)

    def crafted(rel):
        return lambda root: _crafted_header(root / rel, marker)

    def record(rel):
        return lambda root: _crafted_record(root / rel, marker)

    def symlinked(rel):
        def plant(root):
            (root / rel).unlink()
            os.symlink(outside, root / rel)
        return plant

    variants = {}
    for rel in tensor_files:
        variants[f"pickle in {rel}"] = (pickled(rel), rel)
        variants[f"crafted header in {rel}"] = (crafted(rel), rel)
        variants[f"crafted record in {rel}"] = (record(rel), rel)
        variants[f"{rel} a symlink to a file outside"] = (symlinked(rel), rel)

    def listed(name):
        return lambda root: {name: outside}

    def old_name(root):
        torch.save({"kind": "vae", "p": _Payload(marker)}, root / "vae.pt")

    def manifest_link(root):
        real = outside.with_name("manifest.json")
        shutil.copyfile(root / "manifest.json", real)
        (root / "manifest.json").unlink()
        os.symlink(real, root / "manifest.json")
        return None

    variants["manifest lists ../outside.bin"] = (listed("../outside.bin"), "../outside.bin")
    variants["manifest lists an absolute path"] = (listed(str(outside)), str(outside))
    variants["manifest lists denoisers/../../outside.bin"] = (listed("denoisers/../../outside.bin"),
                                                             "denoisers/../../outside.bin")
    variants["a pickled vae.pt beside the models"] = (old_name, "vae.pt")
    variants["manifest.json a symlink"] = (manifest_link, "manifest.json")
    return variants


def _plant(bundle: Path, root: Path, plant: Callable) -> None:
    """Copy ``bundle`` to ``root``, plant, and fix up the manifest's hashes (as an attacker would)."""
    shutil.copytree(bundle, root, symlinks=True)
    manifest = json.loads((root / "manifest.json").read_text())
    extra = plant(root)
    if (root / "manifest.json").is_symlink():
        return
    listed = set(manifest["files"]) | ({"vae.pt"} if (root / "vae.pt").exists() else set())
    files = {rel: root / rel for rel in listed}
    files.update(extra or {})
    manifest["files"] = {rel: {"sha256": file_sha256(p), "bytes": p.stat().st_size} for rel, p in files.items()}
    (root / "manifest.json").write_text(json.dumps(manifest))


def test_planted_code_in_any_bundle_file_never_runs(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    import pickle

    from multibeta.api import MultiBeta
    from multibeta.bundle.manifest import BundleError

    workdir, config = tiny_run
    bundle = workdir / "results" / config["experiment"] / "bundle"
    control = tmp_path / "control_marker"
    pickle.loads(pickle.dumps(_Payload(control)))  # the payload is live: unpickling it runs it
    assert control.exists()
    marker = tmp_path / "marker"
    outside = tmp_path / "outside" / "outside.bin"
    outside.parent.mkdir()
    torch.save({"weights": _Payload(marker)}, outside)
    planted = []
    for i, (name, (plant, rel)) in enumerate(_planted_variants(bundle, outside, marker).items()):
        root = tmp_path / f"variant{i}"
        _plant(bundle, root, plant)
        variant = Path(rel).stem if rel.startswith("denoisers/") and ".." not in rel else "multibeta"
        with pytest.raises(BundleError) as err:
            MultiBeta.load(root, variant=variant, device="cpu")
        assert str(root) in str(err.value) and rel in str(err.value), (name, str(err.value))
        assert not marker.exists(), name
        planted.append((name, root, rel, variant))
    # the command line refuses each one too (all commands in one fresh process)
    commands = [["sample", str(root), "-n", "2", "--steps", "1", "--device", "cpu", "--variant", variant,
                 "--out", "x.png"] for _, root, _, variant in planted]
    for (name, root, rel, _), (code, stderr) in zip(planted, _multibeta_cli_batch(commands, tmp_path)):
        assert code == 2 and str(root) in stderr and rel in stderr, (name, stderr)
    assert not marker.exists()
    assert not (tmp_path / "x.png").exists()


def _write_old_format_bundle(bundle: Path, results: Path, old: Path) -> None:
    """The tiny run's bundle as format version 1 wrote it: pickled ``.pt`` checkpoints (with
    numpy arrays, as the trainers saved them then), ``latent_space.pt``, ``directions.pt``."""
    import numpy as np

    def numpy_era(state):
        state = dict(state)
        for key in ("normalisation", "cache"):
            if isinstance(state.get(key), dict):
                state[key] = {k: v.numpy() if isinstance(v, torch.Tensor) else v for k, v in state[key].items()}
        return state

    manifest = json.loads((bundle / "manifest.json").read_text())
    (old / "denoisers").mkdir(parents=True)
    shutil.copyfile(results / "vae" / "model.pt", old / "vae.pt")
    for v in manifest["variants"]:
        state = torch.load(results / "diffusion" / v / "model.pt", weights_only=True)
        state["rng"]["numpy"] = np.random.get_state()
        torch.save(numpy_era(state), old / "denoisers" / f"{v}.pt")
    space = read_tensor_file(bundle / "latent_space.safetensors")
    del space["kind"]
    torch.save(space, old / "latent_space.pt")
    torch.save(read_tensor_file(bundle / "directions.safetensors")["families"], old / "directions.pt")
    for rel in ("config.yaml", "MODEL_CARD.md", "metrics.json"):
        shutil.copyfile(bundle / rel, old / rel)
    shutil.copytree(bundle / "training", old / "training")
    (old / "manifest.json").write_text(json.dumps({
        **{k: manifest[k] for k in ("experiment", "variants", "latent_dim", "image_channels", "versions")},
        "format_version": 1, "files": file_entries(old)}))


def test_an_old_format_bundle_is_refused_and_converts_to_an_identical_one(
    tiny_run: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    from multibeta.api import MultiBeta
    from multibeta.bundle.manifest import BundleError

    workdir, config = tiny_run
    results = workdir / "results" / config["experiment"]
    old, new = tmp_path / "old", tmp_path / "new"
    _write_old_format_bundle(results / "bundle", results, old)
    command = f"multibeta convert-bundle {old} {tmp_path / 'old-v2'} --trust-pickle"
    with pytest.raises(BundleError, match="bundle format version 1, which stores pickled checkpoints") as err:
        MultiBeta.load(old, device="cpu")
    assert command in str(err.value)
    refused = _multibeta_cli("sample", str(old), "-n", "2", cwd=tmp_path)
    assert refused.returncode == 2 and command in refused.stderr, refused.stderr
    untrusted = _multibeta_cli("convert-bundle", str(old), str(new), cwd=tmp_path)
    assert untrusted.returncode == 2 and "--trust-pickle" in untrusted.stderr and not new.exists()
    done = _multibeta_cli("convert-bundle", str(old), str(new), "--trust-pickle", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    converted, exported = MultiBeta.load(new, device="cpu"), MultiBeta.load(results / "bundle", device="cpu")
    assert converted.bundle.manifest["converted_from"]["format_version"] == 1
    z = converted.sample_latents(8)
    assert torch.equal(z, exported.sample_latents(8))
    assert torch.equal(converted.decode(z, 0.0), exported.decode(z, 0.0))
    assert converted.bundle.direction_names() == exported.bundle.direction_names()
