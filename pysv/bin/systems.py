"""Recipe helper: expand system names and read values from their configs (used by run.sh).

    python -m pysv.bin.systems list default|paper|all|<name> ...   # system names, one per line
                                                               # (list names: conf/systems.yaml)
    python -m pysv.bin.systems get <system> data.feature       # a config value ('' for null)
    python -m pysv.bin.systems get exp/<system>/config.yaml extract.mode   # ... of a run's resolved config
    python -m pysv.bin.systems augment-sets <system> ...       # "<system> musan|rirs <manifest>" lines:
                                                               # the augmentation sets a config trains with
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def expand(names, conf_dir="conf"):
    from pysv.train.config import list_systems, system_lists
    available = list_systems(conf_dir)
    lists = system_lists(conf_dir)
    out = []
    for n in names:
        for part in n.replace(",", " ").split():
            if part in lists:
                unknown = [x for x in lists[part] if x not in available]
                if unknown:
                    raise SystemExit(f"{conf_dir}/systems.yaml: list '{part}' names {', '.join(unknown)}, "
                                     f"which have no {conf_dir}/<system>.yaml")
                out += lists[part]
            elif part == "all":
                out += available
            elif part in available:
                out.append(part)
            else:
                raise SystemExit(f"unknown system '{part}': no {conf_dir}/{part}.yaml "
                                 f"(available: {', '.join(lists)}, all, {', '.join(available)})")
    seen = set()
    return [s for s in out if not (s in seen or seen.add(s))]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--conf-dir", default="conf")
    sub = p.add_subparsers(dest="cmd", required=True)
    a = sub.add_parser("list")
    a.add_argument("names", nargs="+")
    g = sub.add_parser("get")
    g.add_argument("system")
    g.add_argument("key")
    a = sub.add_parser("augment-sets")
    a.add_argument("systems", nargs="+")
    args = p.parse_args(argv)
    if args.cmd == "list":
        print("\n".join(expand(args.names, args.conf_dir)))
        return 0
    from pysv.train.config import load_config

    def config_of(system):
        path = Path(system) if system.endswith(".yaml") else Path(args.conf_dir) / f"{system}.yaml"
        return load_config(str(path), check_choices=False)

    if args.cmd == "augment-sets":
        for s in args.systems:
            augment = config_of(s)["data"]["augment"]
            for key in ("musan", "rirs"):
                if isinstance(augment, dict) and augment.get(key):
                    print(s, key, augment[key])
        return 0
    cfg = config_of(args.system)
    node = cfg
    for k in args.key.split("."):
        node = node[k]
    print("" if node is None else node)
    return 0


if __name__ == "__main__":
    sys.exit(main())
