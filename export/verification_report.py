"""The verification report of an exported version: `verification.json`
(every number) and `verification.md` (the artifact table, servability, the
int8 graph's float ops), written by `export.verify.verify_version`."""

import json
import os


def _fmt(value, pattern):
    return "n/a" if value is None else pattern.format(value)


def markdown_table(report):
    """The report's artifact table as Markdown."""
    lines = [
        f"Verification of `{report['version_dir']}` on {report['images']} "
        f"{report['dataset']} {report['split']} images "
        f"(TFLite with {report['tflite_threads']} thread(s)).",
        "",
        "| artifact | size | accuracy | Keras accuracy | argmax agreement "
        "| max abs logit diff | latency b=1 (ms) | latency b=32 (ms) | check |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for row in report["artifacts"]:
        size = row["size_bytes"]
        lines.append(
            f"| {row['artifact']} | {_fmt(size and size / 1024, '{:.1f} KiB')} "
            f"| {row['accuracy'] * 100:.2f}% | {row['keras_accuracy'] * 100:.2f}% "
            f"| {row['argmax_agreement'] * 100:.2f}% | {row['max_logit_diff']:.2e} "
            f"| {_fmt(row['latency_ms_batch1'], '{:.2f}')} "
            f"| {_fmt(row['latency_ms_batch32'], '{:.2f}')} "
            f"| {'ok' if row['passed'] else 'FAIL: ' + '; '.join(row['failures'])} |"
        )
    for row in report["artifacts"]:
        if row.get("tie_flips"):
            lines += ["", f"{row['artifact']}: {len(row['tie_flips'])} image(s) beyond the "
                      f"float32 tolerance, allowed as threshold ties (images "
                      f"{row['tie_flips'][:10]}); max abs logit diff on the others "
                      f"{row['max_logit_diff_without_tie_flips']:.2e}."]
    lines += ["", "Servability:", ""]
    for name, check in report["servability"].items():
        status = "ok" if not check["failures"] else "FAIL: " + "; ".join(check["failures"])
        lines.append(f"- {name}: {status}")
    graph = report.get("int8_graph")
    if graph is not None:
        between = ", ".join(op["op"] for op in graph["between"]) or "none"
        after = ", ".join(op["op"] for op in graph["after_output"]) or "none"
        lines += ["", f"int8 graph: float ops between input quantize and output "
                      f"dequantize: {between}; float ops after the output dequantize "
                      f"(post-processing): {after}."]
    lines += ["", f"Result: {'PASSED' if report['passed'] else 'FAILED'}", ""]
    return "\n".join(lines)


def write_report(version_dir, report):
    """Writes `verification.json` and `verification.md` (atomic replace)."""
    for name, text in (
        ("verification.json", json.dumps(report, indent=2)),
        ("verification.md", markdown_table(report)),
    ):
        path = os.path.join(version_dir, name)
        with open(path + ".part", "w") as f:
            f.write(text)
        os.replace(path + ".part", path)
