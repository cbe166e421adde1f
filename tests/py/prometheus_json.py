"""Scrapes a Prometheus endpoint and prints its samples as JSON.

The text is parsed by prometheus_client's parser (the Prometheus project's Python client,
from PyPI): a parser nobody in this project wrote. Usage: prometheus_json.py URL
"""
import json
import sys
import urllib.request

try:
    from prometheus_client.parser import text_string_to_metric_families
except ImportError:
    sys.exit("this python cannot import prometheus_client: pip install prometheus-client "
             "(the metrics tests make a virtual environment with it under target/python)")

with urllib.request.urlopen(sys.argv[1], timeout=10) as response:
    content_type = response.headers.get("Content-Type", "")
    text = response.read().decode()

samples = []
for family in text_string_to_metric_families(text):
    for s in family.samples:
        samples.append({"family": family.name, "type": family.type, "name": s.name,
                        "labels": s.labels, "value": s.value})
json.dump({"content_type": content_type, "samples": samples}, sys.stdout)
