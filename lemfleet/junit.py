"""JUnit XML for smoke results: one test case per host and check.

CI systems (GitHub Actions test reporters, GitLab, Jenkins) read this format to show which check
failed on which host. The layout follows the common JUnit schema: one ``<testsuite>`` named
``lemfleet.smoke``, a ``<testcase classname=HOST name=CHECK>`` per step, with ``<failure>`` or
``<skipped>`` children.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Sequence
from pathlib import Path

from lemfleet.smoke_result import SmokeResult

SUITE_NAME = "lemfleet.smoke"


def junit_tree(results: Sequence[SmokeResult]) -> ET.ElementTree:
    """Build the XML tree; every step of every result becomes one ``<testcase>``."""
    steps = [(result, step) for result in results for step in result.steps]
    failures = sum(1 for _, step in steps if step.status == "failed")
    skipped = sum(1 for _, step in steps if step.status == "skipped")
    total_time = sum(step.seconds for _, step in steps)
    root = ET.Element("testsuites")
    suite = ET.SubElement(
        root,
        "testsuite",
        name=SUITE_NAME,
        tests=str(len(steps)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped),
        time=f"{total_time:.3f}",
    )
    for result, step in steps:
        case = ET.SubElement(suite, "testcase", classname=result.host, name=step.name, time=f"{step.seconds:.3f}")
        if step.status == "failed":
            failure = ET.SubElement(case, "failure", message=step.message, type="SmokeFailure")
            failure.text = f"{result.url}: {step.name}: {step.message}"
        elif step.status == "skipped":
            ET.SubElement(case, "skipped", message=step.message)
        else:
            out = ET.SubElement(case, "system-out")
            out.text = step.message
    ET.indent(root)
    return ET.ElementTree(root)


def write_junit(results: Sequence[SmokeResult], path: str | Path) -> None:
    junit_tree(results).write(path, encoding="utf-8", xml_declaration=True)
