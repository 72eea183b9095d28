"""Parses a Prometheus text-format file with the reference parser (the prometheus_client
package) and prints its samples as JSON: [{"name", "labels", "value", "type"}], so that the
tests read mmsb's --metrics-file through a real parser rather than by string matching.

Usage: python parse_metrics.py FILE
"""

import json
import sys

from prometheus_client.parser import text_string_to_metric_families

with open(sys.argv[1]) as f:
    text = f.read()
samples = [
    {"name": s.name, "labels": s.labels, "value": s.value, "type": family.type}
    for family in text_string_to_metric_families(text)
    for s in family.samples
]
json.dump(samples, sys.stdout)
