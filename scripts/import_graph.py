#!/usr/bin/env python3
"""The library's module graph: which module refers to which (`crate::a::b`, `super::x`, `use` lines), at the
depth given (1: src/<module>/; 2: src/<module>/<file>), and the cycles in it (strongly connected components
of more than one module). Usage: scripts/import_graph.py [--depth 1|2] [--root src]."""
import argparse, os, re, sys
from collections import defaultdict

def module_of(path, root):
    rel = os.path.relpath(path, root)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    return rel  # e.g. ["clip", "kernels", "cpu"]

def resolve(cur, ref):
    parts = ref.split("::")
    if parts[0] == "crate":
        return parts[1:]
    base = cur[:]
    while parts and parts[0] in ("super", "self"):
        if parts[0] == "super":
            base = base[:-1]
        parts = parts[1:]
    return base + parts

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--depth", type=int, default=1)
    ap.add_argument("--root", default="src")
    a = ap.parse_args()
    files = []
    for d, _, fs in os.walk(a.root):
        files += [os.path.join(d, f) for f in fs if f.endswith(".rs")]
    binary = (os.path.join(a.root, "main.rs"), os.path.join(a.root, "cli") + os.sep, os.path.join(a.root, "cli.rs"), os.path.join(a.root, "cli_"))
    lib_files = [f for f in files if not f.startswith(binary)]
    known = set(tuple(module_of(f, a.root)[: a.depth]) for f in lib_files)
    edges = defaultdict(set)
    pat = re.compile(r"\b((?:crate|super|self)(?:::\w+)+)")
    group = re.compile(r"\b((?:crate|super|self)(?:::\w+)*)::\{([^{}]*)\}")
    for f in lib_files:
        cur = module_of(f, a.root)
        anchor = cur
        src = tuple(cur[: a.depth])
        text = re.sub(r"//.*", "", open(f, encoding="utf-8").read())
        refs = pat.findall(text)
        # Grouped imports: `use super::{a, b::c}` names super::a and super::b::c.
        for base, items in group.findall(text):
            refs += [f"{base}::{item.strip().split('::')[0]}" for item in items.split(",") if item.strip() and item.strip() != "self"]
            refs.append(base)
        for ref in refs:
            tgt = resolve(anchor, ref)
            for k in range(a.depth, 0, -1):
                t = tuple(tgt[:k])
                if t in known:
                    if t != src and t[:1] != ("lib",):
                        edges[src].add(t)
                    break
    names = lambda t: "::".join(t)
    for s in sorted(edges):
        print(f"{names(s)} -> {', '.join(sorted(names(t) for t in edges[s]))}")
    # Tarjan's SCC
    index, low, stack, on, sccs, i = {}, {}, [], set(), [], [0]
    def strong(v):
        index[v] = low[v] = i[0]; i[0] += 1; stack.append(v); on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w); low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop(); on.discard(w); comp.append(w)
                if w == v: break
            if len(comp) > 1: sccs.append(sorted(comp))
    sys.setrecursionlimit(10000)
    for v in sorted(known):
        if v not in index: strong(v)
    print(f"\n{len(known)} modules, {sum(len(v) for v in edges.values())} edges, {len(sccs)} cycles")
    for c in sccs:
        print("cycle:", " ↔ ".join(names(t) for t in c))

main()
