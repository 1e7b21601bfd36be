"""Plausibility ranges: one table for every variable and static of every reader, with its source.

A value outside its range is a recording or unit error (FiO2 4000, Temp 50 degC, K 22.9 mmol/L,
pH 735 for 7.35, +-1e308), not a measurement: the readers drop it and count it by variable, with
located examples, in the preparation report (and on screen). Bounds are inclusive.

Sources, in order of preference:

- ``hymate``: the limits these readers have used since their first version (hard physiological
  limits, chosen for the PhysioNet 2012 / 2019 units).
- ``MIMIC-Extract``: the "outlier low / outlier high" columns of MIMIC-Extract's
  ``resources/variable_ranges.csv`` (Wang et al., CHIL 2020), the ranges outside which it removes
  a value as an error. Units match these datasets' (mg/dL, mmol/L, K/uL).
- ``MIMIC-Extract, widened``: where the released PhysioNet data hold real values above the
  MIMIC-Extract limit that are clinically possible (extreme liver enzymes in acute liver failure,
  assays reported at their reporting cap); ``note`` says why and what the data hold.
- ``physical``: no published range was found; the limit is what the quantity can be at all
  (an indicator is 0 or 1, a saturation is at most 100 %), or generous for its unit.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Range:
    lo: float
    hi: float
    unit: str
    source: str
    note: str = ""


_H, _ME, _W, _P = "hymate", "MIMIC-Extract", "MIMIC-Extract, widened", "physical"

# One entry per name used by either reader (PhysioNet 2012 names first, then PhysioNet 2019's own).
RANGES: dict[str, Range] = {
    # --- vital signs and bedside measurements -------------------------------------------------
    "HR": Range(1, 300, "bpm", _H),
    "Temp": Range(15, 46, "degC", _H),
    "RespRate": Range(0, 120, "breaths/min", _H),
    "Resp": Range(0, 120, "breaths/min", _H),
    "SysABP": Range(1, 350, "mmHg", _H),
    "DiasABP": Range(1, 300, "mmHg", _H),
    "MAP": Range(1, 300, "mmHg", _H),
    "NISysABP": Range(1, 350, "mmHg", _H),
    "NIDiasABP": Range(1, 300, "mmHg", _H),
    "NIMAP": Range(1, 300, "mmHg", _H),
    "SBP": Range(1, 350, "mmHg", _H),
    "DBP": Range(1, 300, "mmHg", _H),
    "SaO2": Range(1, 100, "%", _H),
    "O2Sat": Range(1, 100, "%", _H),
    "FiO2": Range(0.1, 1.0, "fraction", _H),
    "GCS": Range(3, 15, "points", _H),
    "Urine": Range(0, 20000, "mL", _H, "P12 Urine is the volume since the previous entry, not per hour"),
    "Weight": Range(1, 400, "kg", _H),
    "MechVent": Range(0, 1, "indicator", _P, "an indicator; the released data hold only 1"),
    "EtCO2": Range(0, 150, "mmHg", _P, "not in MIMIC-Extract; the data hold 10-100"),
    # --- blood gases and chemistry --------------------------------------------------------------
    "pH": Range(6.0, 8.5, "pH", _H),
    "PaCO2": Range(0, 220, "mmHg", _ME),
    "PaO2": Range(0, 770, "mmHg", _ME),
    "HCO3": Range(0, 66, "mmol/L", _ME),
    "BaseExcess": Range(-50, 50, "mmol/L", _P, "not in MIMIC-Extract; P19 holds -32..49.5 and one 100"),
    "Lactate": Range(0, 33, "mmol/L", _ME),
    "Na": Range(0, 250, "mmol/L", _ME),
    "K": Range(0, 15, "mmol/L", _ME),
    "Potassium": Range(0, 15, "mmol/L", _ME),
    "Chloride": Range(0, 200, "mmol/L", _ME),
    "Mg": Range(0, 22, "mg/dL", _ME),
    "Magnesium": Range(0, 22, "mg/dL", _ME),
    "Calcium": Range(0, 30, "mg/dL", _P, "not in MIMIC-Extract; the data hold 1-27.9"),
    "Phosphate": Range(0, 22, "mg/dL", _ME),
    "Glucose": Range(0, 2200, "mg/dL", _ME),
    "BUN": Range(0, 275, "mg/dL", _ME),
    "Creatinine": Range(0, 66, "mg/dL", _ME),
    "Albumin": Range(0, 60, "g/dL", _ME),
    "Cholesterol": Range(0, 660, "mg/dL", _ME),
    "Bilirubin": Range(0, 100, "mg/dL", _W, "MIMIC-Extract 66; P12 holds 79 and 82.8 (liver failure)"),
    "Bilirubin_total": Range(0, 100, "mg/dL", _W, "as P12's Bilirubin"),
    "Bilirubin_direct": Range(0, 100, "mg/dL", _W, "as Bilirubin_total"),
    "ALT": Range(0, 25000, "IU/L", _W, "MIMIC-Extract 11,000; P12 holds 15 values up to 16,920 (acute liver injury)"),
    "AST": Range(0, 40000, "IU/L", _W, "MIMIC-Extract 22,000; P12 holds 4 values up to 36,400 (acute liver injury)"),
    "ALP": Range(0, 5000, "IU/L", _W, "MIMIC-Extract 4,000; P12 holds 6 values up to 4,695"),
    "Alkalinephos": Range(0, 5000, "IU/L", _W, "as P12's ALP"),
    "TroponinI": Range(0, 575, "ng/mL", _ME),
    "TroponinT": Range(0, 50, "ng/mL", _W, "MIMIC-Extract 24; P12 holds 8 values up to 29.91"),
    # --- haematology and coagulation ------------------------------------------------------------
    "HCT": Range(0, 100, "%", _ME),
    "Hct": Range(0, 100, "%", _ME),
    "Hgb": Range(0, 30, "g/dL", _ME),
    "WBC": Range(0, 1100, "K/uL", _ME),
    "Platelets": Range(0, 3000, "K/uL", _W, "MIMIC-Extract 2,200; P12 and P19 each hold one value near 2,300"),
    "PTT": Range(0, 250, "s", _W, "MIMIC-Extract 150; P19 holds 207 values above it, up to 250 (a reporting cap)"),
    "Fibrinogen": Range(0, 3000, "mg/dL", _P, "not in MIMIC-Extract; the data hold 34-1,760"),
    # --- statics ---------------------------------------------------------------------------------
    "Age": Range(0, 130, "years", _H, "P12 and P19 cap ages at 90 and 100"),
    "Gender": Range(0, 1, "indicator", _P),
    "Height": Range(50, 250, "cm", _H),
    "ICUType": Range(1, 4, "code", _P, "1 coronary care, 2 cardiac surgery recovery, 3 medical, 4 surgical"),
    "Unit1": Range(0, 1, "indicator", _P),
    "Unit2": Range(0, 1, "indicator", _P),
    "HospAdmTime": Range(-87600, 87600, "h", _P, "hours from hospital to ICU admission; ten years either way"),
}


def ranges_for(names) -> dict[str, tuple[float, float]]:
    """(lo, hi) for each of `names`; a name without an entry is a programming error, not data."""
    missing = [n for n in names if n not in RANGES]
    if missing:
        raise KeyError(f"no plausibility range for {missing}; add them to hymate.data.plausible.RANGES")
    return {n: (float(RANGES[n].lo), float(RANGES[n].hi)) for n in names}


def span(name: str) -> str:
    """The range as shown in a skip reason: 'outside 15..46 degC'."""
    r = RANGES[name]
    return f"outside {r.lo:g}..{r.hi:g} {r.unit}"


def table_markdown() -> str:
    """The table as Markdown (README, `hymate describe --ranges`)."""
    rows = ["| variable | low | high | unit | source | note |", "|---|---|---|---|---|---|"]
    rows += [f"| {n} | {r.lo:g} | {r.hi:g} | {r.unit} | {r.source} | {r.note} |" for n, r in RANGES.items()]
    return "\n".join(rows)
