#!/usr/bin/env python3
"""Compare raftmq's apache.rocketmq.v2 .proto files with the official protocol.

The official descriptors come from the installed `rocketmq-python-client` package
(`rocketmq.grpc_protocol.*_pb2`). Ours are compiled with protoc into a descriptor set.
Every message, enum, service and method of package apache.rocketmq.v2 is compared
field by field: name, number, type, label, type name, oneof membership, proto3
`optional`, map entries, enum values, request/response types and streaming.

Prints every difference and exits 1 if there is any, 0 if none, 2 on setup errors.
With --allow-additions, things only ours has (fields, values, messages, RPCs that a
newer protocol revision added) are listed but accepted: use it to check that ours is
a compatible superset of what an older client knows.

Usage:
    python3 proto/tools/check_compat.py [--protoc PATH] [--proto-root DIR] [--allow-additions]

protoc is looked up in this order: --protoc, $PROTOC, the binary of the
protoc-bin-vendored crate in ~/.cargo/registry, `protoc` on PATH.
"""

import argparse
import glob
import importlib
import os
import pkgutil
import platform
import shutil
import subprocess
import sys
import tempfile

PACKAGE = "apache.rocketmq.v2"
OUR_FILES = [
    "apache/rocketmq/v2/definition.proto",
    "apache/rocketmq/v2/service.proto",
    "apache/rocketmq/v2/admin.proto",
]


def fail_setup(msg):
    print(f"check_compat: {msg}", file=sys.stderr)
    sys.exit(2)


def find_protoc(explicit):
    if explicit:
        return explicit
    if os.environ.get("PROTOC"):
        return os.environ["PROTOC"]
    arch = {"x86_64": "linux-x86_64", "aarch64": "linux-aarch_64"}.get(platform.machine())
    if arch and sys.platform.startswith("linux"):
        cargo_home = os.environ.get("CARGO_HOME", os.path.expanduser("~/.cargo"))
        hits = sorted(glob.glob(
            os.path.join(cargo_home, "registry/src/*", f"protoc-bin-vendored-{arch}-*", "bin", "protoc")))
        if hits:
            return hits[-1]
    found = shutil.which("protoc")
    if found:
        return found
    fail_setup("no protoc found; pass --protoc PATH (run `cargo build -p raftmq-proto` first "
               "to fetch the vendored one)")


def wkt_include_for(protoc):
    """The include dir with google/protobuf/*.proto that ships next to a protoc binary."""
    inc = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(protoc))), "include")
    return inc if os.path.isfile(os.path.join(inc, "google/protobuf/timestamp.proto")) else None


def load_ours(protoc, proto_root, descriptor_pb2):
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "ours.pb")
        cmd = [protoc, f"--proto_path={proto_root}"]
        inc = wkt_include_for(protoc)
        if inc:
            cmd.append(f"--proto_path={inc}")
        cmd += [f"--descriptor_set_out={out}", "--include_imports", *OUR_FILES]
        try:
            res = subprocess.run(cmd, cwd=proto_root, capture_output=True, text=True)
        except OSError as e:
            fail_setup(f"cannot run protoc {protoc!r}: {e}")
        if res.returncode != 0:
            fail_setup(f"protoc failed:\n{res.stderr}")
        fds = descriptor_pb2.FileDescriptorSet()
        with open(out, "rb") as f:
            fds.ParseFromString(f.read())
    return [f for f in fds.file if f.package == PACKAGE]


def load_official(descriptor_pb2):
    try:
        pkg = importlib.import_module("rocketmq.grpc_protocol")
    except ImportError as e:
        fail_setup(f"official package not importable ({e}); "
                   "pip install rocketmq-python-client into this python")
    files = []
    for mod in pkgutil.iter_modules(pkg.__path__):
        if not mod.name.endswith("_pb2"):
            continue
        m = importlib.import_module(f"rocketmq.grpc_protocol.{mod.name}")
        fdp = descriptor_pb2.FileDescriptorProto()
        m.DESCRIPTOR.CopyToProto(fdp)
        if fdp.package == PACKAGE:
            files.append(fdp)
    if not files:
        fail_setup(f"the official package has no {PACKAGE} descriptors")
    return files


def index(files):
    """Full name -> descriptor proto, for messages, enums and services."""
    messages, enums, services = {}, {}, {}

    def walk(prefix, msg):
        name = f"{prefix}.{msg.name}"
        messages[name] = msg
        for e in msg.enum_type:
            enums[f"{name}.{e.name}"] = e
        for n in msg.nested_type:
            walk(name, n)

    for f in files:
        prefix = f".{f.package}"
        for m in f.message_type:
            walk(prefix, m)
        for e in f.enum_type:
            enums[f"{prefix}.{e.name}"] = e
        for s in f.service:
            services[f"{prefix}.{s.name}"] = s
    return messages, enums, services


def field_facts(msg, f, descriptor_pb2):
    fdp = descriptor_pb2.FieldDescriptorProto
    facts = {
        "name": f.name,
        "type": fdp.Type.Name(f.type),
        "label": fdp.Label.Name(f.label),
        "type_name": f.type_name,
        "proto3_optional": f.proto3_optional,
    }
    if f.HasField("oneof_index"):
        facts["oneof"] = msg.oneof_decl[f.oneof_index].name
    else:
        facts["oneof"] = None
    return facts


def compare(official, ours, descriptor_pb2):
    """Returns (diffs, additions, counts): diffs are conflicts or things ours lacks;
    additions are things only ours has (newer protocol revisions than the installed client)."""
    diffs, additions = [], []
    o_msgs, o_enums, o_svcs = index(official)
    u_msgs, u_enums, u_svcs = index(ours)
    counts = {"messages": 0, "enums": 0, "services": 0, "methods": 0, "fields": 0, "values": 0}

    def presence(kind, o, u):
        for name in sorted(set(o) - set(u)):
            diffs.append(f"{kind} {name}: missing in ours")
        for name in sorted(set(u) - set(o)):
            additions.append(f"{kind} {name}: not in the official protocol")
        return sorted(set(o) & set(u))

    for name in presence("message", o_msgs, u_msgs):
        counts["messages"] += 1
        om, um = o_msgs[name], u_msgs[name]
        if om.options.map_entry != um.options.map_entry:
            diffs.append(f"message {name}: map_entry {om.options.map_entry} vs ours {um.options.map_entry}")
        of = {f.number: f for f in om.field}
        uf = {f.number: f for f in um.field}
        for num in sorted(set(of) - set(uf)):
            diffs.append(f"field {name}.{of[num].name} = {num}: missing in ours")
        for num in sorted(set(uf) - set(of)):
            additions.append(f"field {name}.{uf[num].name} = {num}: not in the official protocol")
        for num in sorted(set(of) & set(uf)):
            counts["fields"] += 1
            a = field_facts(om, of[num], descriptor_pb2)
            b = field_facts(um, uf[num], descriptor_pb2)
            for key in a:
                if a[key] != b[key]:
                    diffs.append(f"field {name}.{a['name']} = {num}: {key} {a[key]!r} vs ours {b[key]!r}")
        o_oneofs = {o.name for o in om.oneof_decl}
        u_oneofs = {o.name for o in um.oneof_decl}
        for o in sorted(o_oneofs - u_oneofs):
            diffs.append(f"oneof {name}.{o}: missing in ours")
        for o in sorted(u_oneofs - o_oneofs):
            additions.append(f"oneof {name}.{o}: not in the official protocol")

    for name in presence("enum", o_enums, u_enums):
        counts["enums"] += 1
        ov = {v.name: v.number for v in o_enums[name].value}
        uv = {v.name: v.number for v in u_enums[name].value}
        counts["values"] += len(ov)
        for v in sorted(set(ov) | set(uv)):
            if v not in ov:
                additions.append(f"enum value {name}.{v} = {uv[v]}: not in the official protocol")
            elif ov[v] != uv.get(v):
                diffs.append(f"enum value {name}.{v}: {ov[v]} vs ours {uv.get(v)}")
        o_by_num = {}
        for v in o_enums[name].value:
            o_by_num.setdefault(v.number, v.name)
        for v in u_enums[name].value:
            if v.name not in ov and v.number in o_by_num:
                diffs.append(f"enum value {name}.{v.name} = {v.number}: number is "
                             f"{o_by_num[v.number]} in the official protocol")

    for name in presence("service", o_svcs, u_svcs):
        counts["services"] += 1
        om = {m.name: m for m in o_svcs[name].method}
        um = {m.name: m for m in u_svcs[name].method}
        for m in presence(f"rpc of {name}:", om, um):
            counts["methods"] += 1
            a, b = om[m], um[m]
            for key in ("input_type", "output_type", "client_streaming", "server_streaming"):
                if getattr(a, key) != getattr(b, key):
                    diffs.append(f"rpc {name}/{m}: {key} {getattr(a, key)!r} vs ours {getattr(b, key)!r}")
    return diffs, additions, counts


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--protoc", help="protoc binary (default: $PROTOC, the vendored one, or PATH)")
    ap.add_argument("--allow-additions", action="store_true",
                    help="accept things only ours has (to check against an older client); "
                         "they are still listed")
    ap.add_argument("--proto-root", default=os.path.dirname(here),
                    help="directory holding apache/rocketmq/v2/*.proto (default: proto/)")
    args = ap.parse_args()

    try:
        from google.protobuf import descriptor_pb2
    except ImportError:
        fail_setup("python package protobuf missing; pip install rocketmq-python-client")

    protoc = find_protoc(args.protoc)
    official = load_official(descriptor_pb2)
    ours = load_ours(protoc, args.proto_root, descriptor_pb2)

    try:
        from importlib.metadata import version
        client_version = version("rocketmq-python-client")
    except Exception:  # noqa: BLE001 - only informational
        client_version = "unknown"
    print(f"protoc: {protoc}")
    print(f"official: rocketmq-python-client {client_version}, files "
          f"{', '.join(sorted(f.name for f in official))}")
    print(f"ours: {', '.join(f.name for f in ours)}")

    diffs, additions, counts = compare(official, ours, descriptor_pb2)
    print("compared: " + ", ".join(f"{v} {k}" for k, v in counts.items()))
    for a in additions:
        print(f"{'ADDED' if args.allow_additions else 'DIFF'} {a}")
    if not args.allow_additions:
        diffs += additions
    if diffs:
        for d in diffs:
            print(f"DIFF {d}")
        print(f"{len(diffs)} difference(s)")
        return 1
    if additions:
        print(f"OK: package {PACKAGE} is a compatible superset of the official descriptors "
              f"({len(additions)} addition(s))")
    else:
        print(f"OK: package {PACKAGE} matches the official descriptors")
    return 0


if __name__ == "__main__":
    sys.exit(main())
