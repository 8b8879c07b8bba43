#!/usr/bin/python3
"""Checks an NWB file written by `twinloop export` against its session, with h5py only.

    check_nwb.py OUT.nwb SESSION_DIR SAMPLE_RATE_HZ

What it checks (NWB core 2.5.0 / hdmf-common 1.5.0, the parts the export writes):
- the root is an NWBFile: namespace, neurodata_type, nwb_version 2.x, object_id; the required
  datasets (file_create_date as a 1-D ISO 8601 array, identifier, session_description,
  session_start_time, timestamps_reference_time) and groups (acquisition, analysis, processing,
  stimulus/presentation, stimulus/templates, general);
- every typed object has namespace, neurodata_type and a unique UUID object_id;
- /intervals/trials is a TimeIntervals and /units a Units DynamicTable: colnames name existing
  VectorData columns with a description, every column has one value per id, index columns
  are VectorIndex with a target reference to their VectorData and are not in colnames;
- against the session: the trials are exactly the delivered ones (ids, onset times = onset
  sample / rate, stimulus values, is_validation, status), the units are the record's units,
  and each unit's spike times are its spikes in spike_times.npy / rate, ascending.
Prints "NWB OK ..." and exits 0, or prints every problem and exits 1. Needs Python 3, h5py and
numpy (Debian: python3-h5py).
"""

import datetime
import json
import re
import sqlite3
import sys
from pathlib import Path

import h5py
import numpy as np

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
problems = []


def problem(text):
    problems.append(text)


def text(value):
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def check_typed(obj, namespace, neurodata_type):
    attrs = obj.attrs
    if text(attrs.get("namespace", "")) != namespace:
        problem(f"{obj.name}: namespace {attrs.get('namespace')!r}, expected {namespace!r}")
    if text(attrs.get("neurodata_type", "")) != neurodata_type:
        problem(f"{obj.name}: neurodata_type {attrs.get('neurodata_type')!r}, "
                f"expected {neurodata_type!r}")


def check_isodatetime(path, value):
    try:
        parsed = datetime.datetime.fromisoformat(text(value))
        if parsed.tzinfo is None:
            problem(f"{path}: {value!r} has no time zone")
    except ValueError:
        problem(f"{path}: {value!r} is not ISO 8601")


def check_table(f, path, neurodata_type, index_columns):
    """Returns {column name: values} for a DynamicTable, after checking its structure."""
    if path not in f:
        problem(f"{path}: missing")
        return {}, []
    table = f[path]
    check_typed(table, "core", neurodata_type)
    if "description" not in table.attrs:
        problem(f"{path}: no description attribute")
    colnames = [text(c) for c in table.attrs.get("colnames", [])]
    if not colnames:
        problem(f"{path}: no colnames attribute")
    if "id" not in table:
        problem(f"{path}: no id dataset")
        return {}, colnames
    check_typed(table["id"], "hdmf-common", "ElementIdentifiers")
    if table["id"].dtype.kind not in "iu":
        problem(f"{path}/id: dtype {table['id'].dtype}, expected integers")
    ids = table["id"][()]
    if len(set(ids.tolist())) != len(ids):
        problem(f"{path}/id: identifiers are not unique")
    columns = {"id": ids}
    for name in colnames:
        if name not in table:
            problem(f"{path}: colnames names {name!r}, which is not in the table")
            continue
        column = table[name]
        check_typed(column, "hdmf-common", "VectorData")
        if "description" not in column.attrs:
            problem(f"{path}/{name}: no description attribute")
        values = column[()]
        columns[name] = values
        if name in index_columns:
            continue
        if len(values) != len(ids):
            problem(f"{path}/{name}: {len(values)} values for {len(ids)} rows")
    for name, obj in table.items():
        if name == "id":
            continue
        if name.endswith("_index"):
            if name in colnames:
                problem(f"{path}: index column {name} is listed in colnames")
            check_typed(obj, "hdmf-common", "VectorIndex")
            if obj.dtype.kind != "u":
                problem(f"{path}/{name}: dtype {obj.dtype}, expected unsigned integers")
            target = obj.attrs.get("target")
            if not isinstance(target, h5py.Reference) or f[target].name != f"{path}/{name[:-6]}":
                problem(f"{path}/{name}: target does not reference {path}/{name[:-6]}")
            columns[name] = obj[()]
        elif name not in colnames:
            problem(f"{path}: column {name} is not listed in colnames")
    return columns, colnames


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        return 2
    nwb_path, session, rate = Path(sys.argv[1]), Path(sys.argv[2]), float(sys.argv[3])
    con = sqlite3.connect((session / "session.sqlite").resolve().as_uri() + "?mode=ro", uri=True)
    f = h5py.File(nwb_path, "r")

    # The file.
    check_typed(f, "core", "NWBFile")
    if not text(f.attrs.get("nwb_version", "")).startswith("2."):
        problem(f"/: nwb_version {f.attrs.get('nwb_version')!r}, expected 2.x")
    for name in ("identifier", "session_description", "session_start_time",
                 "timestamps_reference_time", "file_create_date"):
        if name not in f or not isinstance(f[name], h5py.Dataset):
            problem(f"/{name}: missing")
    for name in ("acquisition", "analysis", "processing", "stimulus", "stimulus/presentation",
                 "stimulus/templates", "general", "intervals"):
        if name not in f or not isinstance(f[name], h5py.Group):
            problem(f"/{name}: missing group")
    if "file_create_date" in f:
        dates = f["file_create_date"]
        if dates.ndim != 1 or len(dates) < 1:
            problem("/file_create_date: expected a 1-D array of dates")
        for value in dates[()]:
            check_isodatetime("/file_create_date", value)
    for name in ("session_start_time", "timestamps_reference_time"):
        if name in f:
            check_isodatetime(f"/{name}", f[name][()])
    if "general/subject" in f:
        check_typed(f["general/subject"], "core", "Subject")

    # object_id everywhere a type is.
    seen = {}

    def visit(name, obj):
        if "neurodata_type" in obj.attrs:
            oid = text(obj.attrs.get("object_id", ""))
            if not UUID.match(oid):
                problem(f"/{name}: object_id {oid!r} is not a UUID 4")
            elif oid in seen:
                problem(f"/{name}: object_id also used by {seen[oid]}")
            seen[oid] = "/" + name
    visit("", f)
    f.visititems(visit)

    # Trials: exactly the delivered ones.
    trials, trial_cols = check_table(f, "/intervals/trials", "TimeIntervals", set())
    for required in ("start_time", "stop_time"):
        if required not in trial_cols:
            problem(f"/intervals/trials: no {required} column")
    delivered = con.execute(
        "SELECT t.trial, d.onset_sample, t.stimulus_json, t.is_validation, t.status"
        " FROM trials t JOIN deliveries d ON d.trial = t.trial ORDER BY t.trial").fetchall()
    if "id" in trials:
        if trials["id"].tolist() != [row[0] for row in delivered]:
            problem(f"/intervals/trials: ids {trials['id'].tolist()} are not the delivered trials "
                    f"{[row[0] for row in delivered]}")
        elif "stimulus_onset_time" in trials:
            onsets = np.array([row[1] for row in delivered], dtype=np.int64) / rate
            if not np.allclose(trials["stimulus_onset_time"], onsets, rtol=0, atol=1e-9):
                problem("/intervals/trials/stimulus_onset_time: not onset_sample / rate")
            if np.any(trials["start_time"] > trials["stimulus_onset_time"]) or np.any(
                    trials["stop_time"] <= trials["stimulus_onset_time"]):
                problem("/intervals/trials: onset not inside [start_time, stop_time)")
            for i, (trial, _, stimulus_json, is_validation, status) in enumerate(delivered):
                for key, value in json.loads(stimulus_json).items():
                    if key not in trials or trials[key][i] != value:
                        problem(f"/intervals/trials: trial {trial}: {key} is not {value}")
                if bool(trials["is_validation"][i]) != bool(is_validation):
                    problem(f"/intervals/trials: trial {trial}: is_validation differs")
                if text(trials["status"][i]) != status:
                    problem(f"/intervals/trials: trial {trial}: status differs")
            if trials["is_validation"].dtype != np.bool_:
                problem("/intervals/trials/is_validation: not stored as a boolean")

    # Units: the record's units, each with its spikes from spike_times.npy.
    units, unit_cols = check_table(f, "/units", "Units", {"spike_times"})
    unit_ids = [row[0] for row in con.execute("SELECT id FROM units ORDER BY id")]
    spikes = 0
    if "id" in units and units["id"].tolist() != unit_ids:
        problem("/units/id: not the record's units")
    elif "spike_times" not in unit_cols or "spike_times_index" not in units:
        problem("/units: no spike_times with spike_times_index")
    else:
        times, index = units["spike_times"], units["spike_times_index"]
        if f["/units/spike_times"].dtype != np.float64:
            problem("/units/spike_times: not float64")
        if len(index) != len(unit_ids):
            problem(f"/units/spike_times_index: {len(index)} entries for {len(unit_ids)} units")
        elif np.any(np.diff(index.astype(np.int64)) < 0) or (len(index) and index[-1] != len(times)):
            problem("/units/spike_times_index: not non-decreasing up to len(spike_times)")
        else:
            samples = np.load(session / "spike_times.npy")
            clusters = np.load(session / "spike_clusters.npy")
            start = 0
            for row, unit in enumerate(unit_ids):
                mine = times[start:index[row]]
                expected = np.sort(samples[clusters == unit]) / rate
                if not np.array_equal(mine, expected):
                    problem(f"/units: unit {unit}: spike times differ from spike_times.npy / rate")
                start = index[row]
            spikes = len(times)
            if spikes != len(samples):
                problem(f"/units/spike_times: {spikes} spikes, spike_times.npy has {len(samples)}")
        resolution = f["/units/spike_times"].attrs.get("resolution")
        if resolution is None or abs(resolution - 1.0 / rate) > 1e-15:
            problem("/units/spike_times: resolution is not 1 / rate")

    if problems:
        for p in problems:
            print("NWB PROBLEM", p)
        return 1
    print(f"NWB OK: {len(trials.get('id', []))} trials, {len(unit_ids)} units, {spikes} spikes, "
          f"{len(seen)} typed objects")
    return 0


if __name__ == "__main__":
    sys.exit(main())
