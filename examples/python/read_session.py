#!/usr/bin/python3
"""Load a twinloop session record into pandas DataFrames and print a short summary.

    read_session.py SESSION_DIR

Uses only the standard library's sqlite3, numpy and pandas (Debian: python3-pandas); no twinloop
code. The record is opened read-only (a `file:...?mode=ro` URI), so running this against a live
session never disturbs it: the daemon keeps writing, and this sees the trials committed so far.

The tables and encodings are described in docs/session-record.md: arrays are BLOBs, `mean` and
`dispersion` little-endian float64 ("<f8"), `counts` little-endian uint32 ("<u4"), one value per
unit in units.id order. `load_session()` returns the DataFrames for your own analysis:

    trials       one row per trial (design, delivery, scoring window)
    predictions  one row per (trial, hypothesis, unit): predicted mean and dispersion
    outcomes     one row per (trial, unit): the observed spike count
    posteriors   one row per trial, one column per hypothesis: posterior probability
    events       one row per event (faults, gaps, resumes, ...), detail_json decoded
"""

import json
import sqlite3
import sys
from pathlib import Path

import numpy as np
import pandas as pd

MEAN_DTYPE = np.dtype("<f8")
COUNT_DTYPE = np.dtype("<u4")


def connect_read_only(session_dir):
    """Opens SESSION_DIR/session.sqlite read-only; raises FileNotFoundError if it is not there."""
    path = Path(session_dir) / "session.sqlite"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no session record there")
    return sqlite3.connect(path.resolve().as_uri() + "?mode=ro", uri=True)


def load_session(session_dir):
    """Returns a dict of DataFrames (see the module docstring) and the session's metadata."""
    con = connect_read_only(session_dir)
    try:
        # One read transaction: every table comes from the same snapshot of a live record.
        con.execute("BEGIN")
        session = pd.read_sql("SELECT format_version, config_json, created_at_ns, "
                              "twinloop_version FROM session", con).iloc[0]
        hypotheses = pd.read_sql("SELECT id, name, family FROM hypotheses ORDER BY id", con)
        units = pd.read_sql("SELECT id, probe, channel, label FROM units ORDER BY id", con)
        trials = pd.read_sql(
            "SELECT t.trial, t.candidate, t.stimulus_json, t.strategy, t.is_validation,"
            " t.designed_at_ns, t.expected_information_gain, t.status,"
            " d.onset_sample, d.delivered_at_ns, o.window_start, o.window_end"
            " FROM trials t LEFT JOIN deliveries d ON d.trial = t.trial"
            " LEFT JOIN outcomes o ON o.trial = t.trial ORDER BY t.trial", con)
        raw_predictions = pd.read_sql(
            "SELECT trial, hypothesis, units, mean, dispersion, committed_at_ns"
            " FROM predictions ORDER BY trial, hypothesis", con)
        raw_outcomes = pd.read_sql("SELECT trial, units, counts FROM outcomes ORDER BY trial", con)
        posteriors = pd.read_sql(
            "SELECT trial, hypothesis, probability, log_evidence FROM posteriors", con)
        events = pd.read_sql(
            "SELECT id, at_ns, kind, trial, detail_json FROM events ORDER BY id", con)
        con.execute("COMMIT")
    finally:
        con.close()

    trials["is_validation"] = trials["is_validation"].astype(bool)
    trials["designed_at"] = pd.to_datetime(trials["designed_at_ns"], unit="ns", utc=True)
    stimulus = pd.DataFrame([json.loads(s) for s in trials["stimulus_json"]], index=trials.index)
    trials = pd.concat([trials.drop(columns="stimulus_json"), stimulus], axis=1)

    names = dict(zip(hypotheses["id"], hypotheses["name"]))
    # BLOBs to one row per unit: (trial, hypothesis, unit, mean, dispersion).
    parts = []
    for row in raw_predictions.itertuples(index=False):
        mean = np.frombuffer(row.mean, MEAN_DTYPE)
        dispersion = np.frombuffer(row.dispersion, MEAN_DTYPE)
        parts.append(pd.DataFrame({
            "trial": row.trial, "hypothesis": names.get(row.hypothesis, row.hypothesis),
            "unit": np.arange(len(mean)), "mean": mean, "dispersion": dispersion}))
    predictions = (pd.concat(parts, ignore_index=True) if parts else
                   pd.DataFrame(columns=["trial", "hypothesis", "unit", "mean", "dispersion"]))
    parts = []
    for row in raw_outcomes.itertuples(index=False):
        counts = np.frombuffer(row.counts, COUNT_DTYPE)
        parts.append(pd.DataFrame({"trial": row.trial, "unit": np.arange(len(counts)),
                                   "count": counts.astype(np.int64)}))
    outcomes = (pd.concat(parts, ignore_index=True) if parts else
                pd.DataFrame(columns=["trial", "unit", "count"]))

    posteriors["hypothesis"] = posteriors["hypothesis"].map(names)
    posterior = posteriors.pivot(index="trial", columns="hypothesis", values="probability")
    posterior = posterior.reindex(columns=list(hypotheses["name"]))
    events["at"] = pd.to_datetime(events["at_ns"], unit="ns", utc=True)
    events["detail"] = [json.loads(d) if d and d.lstrip().startswith("{") else d
                        for d in events["detail_json"]]
    return {"session": session, "hypotheses": hypotheses, "units": units, "trials": trials,
            "predictions": predictions, "outcomes": outcomes, "posteriors": posterior,
            "events": events}


def spearman(x, y):
    """Spearman's rank correlation (average ranks for ties), or NaN when it is undefined."""
    x, y = pd.Series(np.asarray(x, float)), pd.Series(np.asarray(y, float))
    if len(x) < 2:
        return float("nan")
    return x.rank().corr(y.rank())


def summarize(s, out=sys.stdout):
    trials, hypotheses = s["trials"], s["hypotheses"]
    config = json.loads(s["session"]["config_json"])
    by_status = trials["status"].value_counts().to_dict()
    print(f"twinloop {s['session']['twinloop_version']} record, format "
          f"{s['session']['format_version']}, rig {config.get('rig', '?')}, seed "
          f"{config.get('seed', '?')}", file=out)
    print(f"trials      {len(trials)} trials on record ("
          + ", ".join(f"{n} {k}" for k, n in sorted(by_status.items()))
          + f"), {int(trials['is_validation'].sum())} validation", file=out)
    print("hypotheses  " + ", ".join(f"{n} ({f})" for n, f in
                                     zip(hypotheses["name"], hypotheses["family"])), file=out)
    print(f"units       {len(s['units'])}", file=out)

    posterior = s["posteriors"]
    print("\nposterior trajectory (probability after each scored trial):", file=out)
    if posterior.empty:
        print("  (no scored trial)", file=out)
    else:
        step = max(1, len(posterior) // 10)
        shown = posterior.iloc[list(range(0, len(posterior), step)) + [len(posterior) - 1]]
        shown = shown[~shown.index.duplicated()]
        print(shown.to_string(float_format=lambda v: f"{v:.3f}"), file=out)

    print("\npredicted vs observed on validation trials (Spearman rho over trials x units):",
          file=out)
    validation = trials.loc[trials["is_validation"], "trial"]
    observed = s["outcomes"][s["outcomes"]["trial"].isin(validation)]
    for name in hypotheses["name"]:
        predicted = s["predictions"][s["predictions"]["hypothesis"] == name]
        both = observed.merge(predicted, on=["trial", "unit"])
        rho = spearman(both["mean"], both["count"])
        print(f"  {name:<14} rho {rho:+.3f}  over {len(both)} (trial, unit) pairs from "
              f"{both['trial'].nunique()} validation trials", file=out)

    events = s["events"]
    kinds = events["kind"].value_counts().to_dict()
    print("\nevents      " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items()))
                             if kinds else "none"), file=out)


def main(argv):
    if len(argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    try:
        session = load_session(argv[1])
    except (FileNotFoundError, sqlite3.Error) as e:
        print(f"read_session.py: {argv[1]}: {e}", file=sys.stderr)
        return 1
    summarize(session)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
