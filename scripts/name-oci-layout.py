"""Names every image of an OCI layout for containerd's import
(`io.containerd.image.name`, so `ctr images import` needs no --base-name).

Usage: python3 scripts/name-oci-layout.py LAYOUT NAME
"""
import json
import sys

layout, name = sys.argv[1], sys.argv[2]
path = f"{layout}/index.json"
with open(path) as file:
    index = json.load(file)
for manifest in index["manifests"]:
    manifest.setdefault("annotations", {})["io.containerd.image.name"] = name
with open(path, "w") as file:
    json.dump(index, file)
