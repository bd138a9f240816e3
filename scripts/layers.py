#!/usr/bin/env python3
"""Checks that imports in src/ point one way.

Builds the graph of which source file uses which (every `crate::` and
`super::` path, `use` lists expanded, and `say!`), then fails if
* any files form a cycle, or
* a top-level module imports one that is not below it in LAYERS.

Usage: scripts/layers.py [--graph]   (--graph prints every edge)
"""
import os
import re
import sys

SRC = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "src")

# Top-level modules, each allowed to import only those after it.
LAYERS = [
    "cli", "top", "startup", "master", "worker", "process", "frontend", "handlers",
    "config", "request", "lifecycle", "proto", "listen", "log", "sys",
]
# Leaves at the same level may not import each other.
LEAVES = {"lifecycle", "proto", "listen", "log", "sys"}
LEAF_DEPS = {"log": {"sys"}}


def module_of(path):
    rel = os.path.relpath(path, SRC)[:-3].split(os.sep)
    if rel[-1] in ("mod", "lib", "main"):
        rel = rel[:-1]
    return tuple(rel)


def strip_comments(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    # string literals: drop their contents (they may mention paths)
    return re.sub(r'"(\\.|[^"\\])*"', '""', text)


def expand(tree):
    """'a::{b, c::{d, e}}' -> ['a::b', 'a::c::d', 'a::c::e']"""
    tree = tree.strip()
    i = tree.find("{")
    if i < 0:
        return [tree] if tree else []
    prefix = tree[:i]
    depth, start, parts = 0, i + 1, []
    for j in range(i, len(tree)):
        c = tree[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                parts.append(tree[start:j])
                break
        elif c == "," and depth == 1:
            parts.append(tree[start:j])
            start = j + 1
    out = []
    for p in parts:
        for e in expand(p):
            out.append(prefix + e if e != "self" else prefix.rstrip(":"))
    return out


def paths_in(text, here, mods):
    found = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for p in expand(re.sub(r"\s+", "", m.group(1))):
            p = re.sub(r"as\w+$", "", p.split(" as ")[0])
            found.append(p)
    found += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
    # paths relative to this module: `child::item`
    found += [p for p in re.findall(r"(?<![:\w])\w+(?:::\w+)+", text)
              if tuple(list(here) + p.split("::")[:1]) in mods]
    out = []
    for p in found:
        parts = p.split("::")
        if parts[0] == "crate":
            out.append(tuple(parts[1:]))
        elif parts[0] == "super":
            base = list(here)
            while parts and parts[0] == "super":
                base = base[:-1]
                parts = parts[1:]
            out.append(tuple(base + parts))
        elif parts[0] == "self":
            out.append(tuple(list(here) + parts[1:]))
        elif tuple(list(here) + parts[:1]) in mods:
            out.append(tuple(list(here) + parts))
    if re.search(r"\bsay!", text):
        out.append(("log", "say"))
    return out


def main():
    files = {}
    for root, _, names in os.walk(SRC):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                files[module_of(p)] = p
    mods = set(files)
    edges = {m: set() for m in mods}
    for m, p in files.items():
        if m in [(), ("main",)]:
            continue
        text = strip_comments(open(p).read())
        # `mod tests` blocks are test code: they may reach anywhere.
        text = re.split(r"#\[cfg\(test\)\]", text)[0]
        for target in paths_in(text, m, mods):
            # the longest prefix that is a file
            for k in range(len(target), 0, -1):
                if target[:k] in mods:
                    t = target[:k]
                    if t != m and not (len(t) < len(m) and m[: len(t)] == t and files[t].endswith("mod.rs") and is_decl_only(files[t])):
                        edges[m].add(t)
                    break
    if "--graph" in sys.argv:
        for m in sorted(edges):
            for t in sorted(edges[m]):
                print("::".join(m), "->", "::".join(t))
    problems = []
    # Tarjan's strongly connected components
    index, low, stack, on, sccs, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                sccs.append(comp)

    for v in sorted(edges):
        if v not in index:
            visit(v)
    for comp in sccs:
        problems.append("cycle: " + ", ".join(sorted("::".join(c) for c in comp)))
    rank = {name: i for i, name in enumerate(LAYERS)}
    for m, ts in edges.items():
        if not m or m[0] not in rank:
            continue
        for t in ts:
            if t[0] == m[0] or t[0] not in rank:
                continue
            a, b = m[0], t[0]
            if a in LEAVES and b in LEAVES:
                ok = b in LEAF_DEPS.get(a, ())
            else:
                ok = rank[b] > rank[a]
            if not ok:
                problems.append(f"layer: {'::'.join(m)} imports {'::'.join(t)}")
    for p in sorted(problems):
        print(p)
    n = sum(len(v) for v in edges.values())
    print(f"{len(files)} files, {n} imports, {len(problems)} problem(s)")
    return 1 if problems else 0


def is_decl_only(path):
    text = strip_comments(open(path).read())
    body = re.sub(r"\s+", " ", text)
    return not re.search(r"\b(fn|struct|enum|trait|impl|static|const|macro_rules)\b", body)


if __name__ == "__main__":
    sys.exit(main())
