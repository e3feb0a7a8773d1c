"""Reading a study's committed results, and which builds of gmoe computed their rows.

``paper_figures/results/NAME.csv.gz`` holds one row per task and ``NAME.run.json`` the
runs that computed them (their builds, through every restore), with the checks' reports
(``NAME.fitcheck.json`` and the others) and other builds' rows (``NAME.build-LABEL``)
beside them.
"""

import csv
import gzip
import json


def read_result_rows(path):
    """The rows of a gzipped CSV of results: numbers as floats, empty fields as None."""
    with gzip.open(path, "rt", newline="", encoding="utf-8") as f:
        rows = []
        for raw in csv.DictReader(f):
            row = {}
            for key, value in raw.items():
                try:
                    row[key] = None if value == "" else float(value)
                except ValueError:
                    row[key] = value
            row["n"] = int(row["n"])
            rows.append(row)
    return rows


def read_results(directory, name):
    """Rows (numbers as floats, empty fields as None) and run info of one study."""
    path = directory / f"{name}.csv.gz"
    if not path.exists():
        return None, None
    rows = read_result_rows(path)
    info_path = directory / f"{name}.run.json"
    info = json.loads(info_path.read_text()) if info_path.exists() else {}
    for key, suffix in (("fitcheck", "fitcheck"), ("asymptotic", "asymptotic"),
                        ("split_cells", "splitcells"), ("truth_check", "truthcheck"),
                        ("boundary_check", "boundarycheck"),
                        ("start_check", "startcheck"), ("coselected", "coselected"),
                        ("build_check", "buildcheck"), ("machine_check", "machinecheck")):
        extra = directory / f"{name}.{suffix}.json"
        if extra.exists():
            info[key] = json.loads(extra.read_text())
    info["other_builds"] = []
    for path in sorted(directory.glob(f"{name}.build-*.csv.gz")):
        label = path.name[len(f"{name}.build-"):-len(".csv.gz")]
        about = directory / f"{name}.build-{label}.json"
        info["other_builds"].append({"label": label, "rows": read_result_rows(path),
                                     "info": json.loads(about.read_text())
                                     if about.exists() else {}})
    return rows, info


def committed_rows(directory, name):
    """A study's committed rows (:func:`read_results`), for a check script.

    Raises
    ------
    SystemExit
        If the study has no committed results in ``directory``.
    """
    rows, _ = read_results(directory, name)
    if rows is None:
        raise SystemExit(f"{name}: no committed results in {directory}.")
    return rows


def restore_link(link):
    """What identifies one restore: the rows it restored, its build, the rows it reran."""
    return {key: link.get(key) for key in ("rows", "code_sha256", "verified_rows")}


def restore_chain(meta):
    """A grid's restores, oldest first (each ``restored_from`` keeps the one before it)."""
    chain, source = [], meta.get("restored_from")
    while source:
        chain.insert(0, source)
        source = source.get("earlier")
    return chain


def row_builds(meta, runs=(), total_rows=None):
    """Which build computed which of a grid's rows.

    A run records its build (``code_sha256``) since the stores keep it, and its rows are
    that build's. For the rows of runs recorded before (and of a grid without run
    records), the restores say what they can: each restore's ``restored_from`` keeps the
    one before it (``earlier``), and the rows a store gained between two restores count as
    the build whose hash the store held when it was exported. A store held one hash, so
    rows of two builds that resumed one store between two restores count as the later
    build's; rows past the last restore count as the grid's own build's.

    Parameters
    ----------
    meta : dict
        A grid's metadata (``run.json``'s ``meta``, or a store's with ``restored_from``
        decoded).
    runs : sequence of dict, default=()
        The grid's run records, oldest first (``run.json``'s ``runs``), with
        ``tasks_stored`` and, where recorded, ``code_sha256``. They count every row, but
        for rows restored without the records of their runs (see ``total_rows``).
    total_rows : int, optional
        The grid's rows. Where the runs count fewer, the rows they miss are the earliest
        (restored from an export that carried no run records) and the restores name
        their builds.

    Returns
    -------
    list of tuple
        ``(rows, code_sha256)`` in the order the rows were computed; a build that
        computed no rows is left out and consecutive rows of one build are merged. The
        last entry's ``rows`` is None: the rest. A build the records do not know is None.
    """
    # The restores' shares: (rows up to, build), in order.
    bounds, before = [], 0
    for link in restore_chain(meta):
        if link["rows"] > before:
            bounds.append((link["rows"], link.get("code_sha256")))
            before = link["rows"]
    own = meta.get("code_sha256")

    def by_restores(start, end):
        """The shares of rows start..end (end None: to the last row) by the restores."""
        shares, position = [], start
        for bound, build in [*bounds, (None, own)]:
            stop = bound if end is None or (bound is not None and bound < end) else end
            if stop is None or stop > position:
                shares.append([None if stop is None else stop - position, build])
                position = stop
            if stop is None or stop == end:
                break
        return shares

    counted = [(int(r.get("tasks_stored") or 0), r.get("code_sha256")) for r in runs]
    counted = [(rows, build) for rows, build in counted if rows > 0]
    missing = 0 if total_rows is None else total_rows - sum(rows for rows, _ in counted)
    if missing > 0 and counted:
        counted.insert(0, (missing, None))  # restored rows whose runs were not kept
    shares, position = [], 0
    for rows, build in counted:
        shares += [[rows, build]] if build else by_restores(position, position + rows)
        position += rows
    if shares:
        shares[-1][0] = None  # the runs count every row: the last share is the rest
    else:
        shares = by_restores(0, None)
    merged = []
    for rows, build in shares:
        if merged and build is not None and build == merged[-1][1]:
            merged[-1][0] = None if rows is None else merged[-1][0] + rows
        else:
            merged.append([rows, build])
    return [tuple(share) for share in merged]


def build_name(build):
    """A code hash as the page and the logs name it (its first 12 digits)."""
    return f"build {build[:12]}" if build else "a build that the committed results do not record"
