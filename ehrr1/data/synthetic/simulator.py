"""Simulates one patient's MIMIC-IV records from latent conditions.

Causal story per patient: age and sex -> chronic comorbidities -> a sequence of encounters, each with a
latent acute condition and a latent severity. Severity, age and comorbidities drive the ED course, the
labs and vitals (shifted by condition, fading as the patient recovers or worsening before death), the
drugs, procedures, imaging, ICU transfer, length of stay, death and readmission. So every outcome a
risk task asks about leaves traces in the record before it happens.

Each patient draws from its own ``random.Random`` seeded by (cohort seed, patient index): output does
not depend on chunking or on other patients.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import defaultdict
from datetime import datetime, timedelta

from ehrr1.data.synthetic.knowledge import (
    ACUTE_CODES,
    ADMISSION_LOCATIONS,
    ARRIVAL,
    BACKGROUND_CODES,
    CHRONIC,
    COMMON_HOME_MEDS,
    COMMON_INPATIENT_DRUGS,
    CONDITIONS,
    DAILY_ORDERS,
    DRUGS,
    ESCALATION,
    EXAM_CODES,
    GENERAL_PROCEDURES,
    ICD9_DIAGNOSES,
    ICD9_PROCEDURES,
    ICD9_YEAR_GROUPS,
    ICU_ASSESSMENT,
    ICU_CHART,
    ICU_DATETIMES,
    ICU_INGREDIENTS,
    ICU_INPUTS,
    ICU_OUTPUTS,
    ICU_OXYGEN,
    ICU_PROCEDURES,
    ICU_ROUND,
    ICU_VENTILATOR,
    INSURANCE,
    LABS,
    LANGUAGES,
    LINE_DATES,
    MARITAL,
    PANELS,
    RACES,
    SHOCK_ESCALATION,
    VITAL_NORMAL,
    YEAR_GROUPS,
    Chronic,
    Condition,
)

Rows = dict[str, list[tuple]]
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
MAX_ENCOUNTERS = 8
AS_NEEDED = {"Acetaminophen", "Ondansetron", "OxyCODONE (Immediate Release)", "Insulin"}
# susceptibilities tested on a positive culture, in the order the laboratory reports them
ANTIBIOTICS = (
    "AMPICILLIN", "AMPICILLIN/SULBACTAM", "CEFAZOLIN", "CEFEPIME", "CEFTAZIDIME", "CEFTRIAXONE", "CIPROFLOXACIN",
    "GENTAMICIN", "MEROPENEM", "PIPERACILLIN/TAZO", "TOBRAMYCIN", "TRIMETHOPRIM/SULFA", "VANCOMYCIN",
)  # fmt: skip
RHYTHMS = ("SR (Sinus Rhythm)", "ST (Sinus Tachycardia)", "AF (Atrial Fibrillation)")


def ts(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat(sep=" ", timespec="seconds")


def day(t: datetime | None) -> str | None:
    return None if t is None else t.date().isoformat()


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _ed_vitals(v: dict[str, float]) -> tuple[float, ...]:
    """Vital signs in the column order of MIMIC-IV-ED (temperature, heartrate, resprate, o2sat, sbp, dbp)."""
    return v["temp"], v["hr"], v["rr"], v["spo2"], v["sbp"], v["dbp"]


def ndc_of(drug: str) -> str:
    """A made-up 11-digit NDC per drug name (no leading zero, so it survives an integer parse unchanged)."""
    number = int.from_bytes(hashlib.sha256(f"ndc:{drug}".encode()).digest()[:8], "big")
    return str(10**10 + number % (9 * 10**10))


def _pick(rng: random.Random, weighted: tuple[tuple[str, float], ...]) -> str:
    return rng.choices([w[0] for w in weighted], [w[1] for w in weighted])[0]


class PatientSimulator:
    def __init__(self, seed: int, diagnosis_titles: dict[int, dict[str, str]]):
        self.seed = seed
        self.titles = diagnosis_titles  # ICD version -> code -> title, for ED diagnoses and discharge notes

    # ---- patient ------------------------------------------------------------------------------
    def simulate(self, index: int) -> Rows:
        rng = random.Random(f"ehrr1-cohort-{self.seed}-{index}")
        rows: Rows = defaultdict(list)
        sid = 10_000_000 + index
        gender = "F" if rng.random() < 0.52 else "M"
        age = min(91, max(18, int(rng.gauss(60, 18))))
        anchor_year = rng.randint(2110, 2190)
        chronic = [
            c for c in CHRONIC.values() if rng.random() < min(0.9, c.prevalence_at_70 * math.exp(0.035 * (age - 70)))
        ]
        frailty = max(0.0, 0.004 * (age - 60)) + sum(c.frailty for c in chronic)
        demographics = {
            "insurance": _pick(rng, INSURANCE),
            "language": _pick(rng, LANGUAGES),
            "marital": _pick(rng, MARITAL),
            "race": _pick(rng, RACES),
        }
        # the year group has its own stream, so that the ICD version it sets leaves the rest of the patient as is
        year_group = YEAR_GROUPS[random.Random(f"ehrr1-era-{self.seed}-{index}").randrange(len(YEAR_GROUPS))]
        version = 9 if year_group in ICD9_YEAR_GROUPS else 10
        titles = self.titles[version]
        patient = _Patient(
            rng, rows, sid, index, gender, age, anchor_year, chronic, frailty, demographics, titles, version
        )
        dod = patient.live()
        rows["patients"].append((sid, gender, age, anchor_year, year_group, day(dod)))
        return rows


class _Patient:
    """The state of one simulated patient while its encounters are generated."""

    def __init__(
        self, rng, rows, sid, index, gender, age, anchor_year, chronic, frailty, demographics, titles, version
    ):
        self.rng: random.Random = rng
        self.titles: dict[str, str] = titles  # of the patient's ICD version
        self.icd_version: int = version
        self.rows: Rows = rows
        self.sid, self.index, self.gender, self.age = sid, index, gender, age
        self.anchor_year = anchor_year
        self.chronic: list[Chronic] = chronic
        self.frailty: float = frailty
        self.demo = demographics
        self.height = rng.gauss(69 if gender == "M" else 64, 2.5)
        obese = 1.5 if any(c.name in ("diabetes", "hypertension") for c in chronic) else 0.0
        self.bmi = rng.gauss(27 + 2 * obese, 4)
        self.counters: dict[str, int] = defaultdict(int)
        self.clinic_days: set[str | None] = set()
        self.background = [
            code for code, base, per_year in BACKGROUND_CODES if rng.random() < base + per_year * max(0, age - 40)
        ]

    def diagnoses(self, codes: list[str]) -> list[str]:
        """ICD-10-CM codes in the patient's ICD version (duplicates of a shared ICD-9 code dropped)."""
        return list(dict.fromkeys(codes if self.icd_version == 10 else (ICD9_DIAGNOSES[c] for c in codes)))

    def procedure(self, code: str) -> str:
        return code if self.icd_version == 10 else ICD9_PROCEDURES[code]

    def _next(self, name: str) -> int:
        self.counters[name] += 1
        return self.counters[name]

    # ---- life course --------------------------------------------------------------------------
    def live(self) -> datetime | None:
        rng = self.rng
        t = datetime(self.anchor_year, 1, 1, 0, 0) + timedelta(days=rng.uniform(0, 720))
        self.outpatient(t - timedelta(days=rng.uniform(20, 200)))
        dod: datetime | None = None
        for k in range(MAX_ENCOUNTERS):
            condition = self.choose_condition(k)
            end, severity, died_at, admitted = self.encounter(k, t, condition)
            if died_at is not None:
                return died_at
            if admitted and dod is None:
                p_post = _sigmoid(-4.6 + 2.5 * severity + 4 * self.frailty + 0.03 * (self.age - 65))
                if rng.random() < p_post:
                    dod = end + timedelta(days=rng.uniform(2, 300), hours=rng.uniform(0, 23))
            burden = len(self.chronic) / 3
            p_return = 0.05 + 0.3 * burden + 0.1 * severity + 0.9 * self.frailty
            if not admitted:  # ED discharge: bounce-backs happen within days
                p_bounce = 0.06 + 0.02 * severity + 0.04 * burden
                if rng.random() < 0.15:  # seen in clinic the next day (weight, blood pressure in the OMR)
                    self.outpatient((end + DAY).replace(hour=rng.randint(8, 16)))
                if rng.random() < p_bounce:
                    gap = timedelta(hours=rng.uniform(6, 70))
                elif rng.random() < 0.5:
                    break
                else:
                    gap = timedelta(days=rng.expovariate(1 / 250) + 5)
            elif end - t < 2 * DAY and rng.random() < 0.06 + 0.04 * burden:  # home from an observation stay,
                gap = timedelta(hours=rng.uniform(6, 48))  # and back within days as from the ED
            elif rng.random() < min(0.8, p_return):
                gap = timedelta(days=rng.expovariate(1 / 18) + 1)  # readmissions cluster in the first weeks
            elif rng.random() < 0.55:
                break
            else:
                gap = timedelta(days=rng.expovariate(1 / 300) + 60)
            t = end + gap
            if dod is not None and t >= dod:
                break
            for visit in range(rng.randint(0, 3)):  # clinic visits between encounters
                self.outpatient(end + gap * (visit + 1) / 4)
        return dod

    def choose_condition(self, k: int) -> Condition:
        weights = []
        for c in CONDITIONS.values():
            w = c.weight
            for chronic in self.chronic:
                w *= chronic.raises.get(c.name, 1.0)
            if c.elective and (k > 0 or self.age < 45):
                w *= 0.3
            weights.append(w)
        return self.rng.choices(list(CONDITIONS.values()), weights)[0]

    # ---- outpatient ---------------------------------------------------------------------------
    def outpatient(self, t: datetime) -> None:
        rng, date = self.rng, day(t)
        if date in self.clinic_days:  # one visit a day: its measurements are charted once
            return
        self.clinic_days.add(date)
        htn = any(c.name == "hypertension" for c in self.chronic)
        sbp = int(rng.gauss(138 if htn else 122, 12))
        weight = self.bmi * (self.height**2) / 703 * rng.uniform(0.98, 1.02)
        results = [
            ("Blood Pressure", f"{sbp}/{int(rng.gauss(80, 8))}"),
            ("Weight (Lbs)", f"{weight:.1f}"),
            ("BMI (kg/m2)", f"{self.bmi:.1f}"),
            ("Height (Inches)", f"{self.height:.0f}"),
        ]
        if any(c.name == "ckd" for c in self.chronic):
            results.append(("eGFR", str(int(rng.uniform(30, 55)))))
        for seq, (name, value) in enumerate(results, start=1):
            self.rows["omr"].append((self.sid, date, seq, name, value))

    # ---- physiology ---------------------------------------------------------------------------
    def lab_value(self, label: str, condition: Condition, acuity: float) -> float:
        lab = LABS[label]
        shift = condition.labs.get(label, 0.0) * acuity + sum(c.labs.get(label, 0.0) for c in self.chronic) * 0.5
        if label == "Lactate":  # hypoperfusion raises it whatever the cause
            shift += 6.0 * max(0.0, acuity - 0.6)
        value = lab.mean + lab.sd * (shift + self.rng.gauss(0, 0.8))
        return round(max(value, lab.sd * 0.1 if lab.low > 0 else 0.0), lab.decimals)

    def vital(self, name: str, condition: Condition, acuity: float) -> float:
        mean, sd = VITAL_NORMAL[name]
        value = mean + sd * (condition.vitals.get(name, 0.0) * acuity + self.rng.gauss(0, 0.7))
        return round(min(value, 100.0), 1) if name in ("spo2", "temp") else float(round(value))

    # ---- one encounter ------------------------------------------------------------------------
    def encounter(self, k: int, t: datetime, condition: Condition):
        """Simulate an ED visit and/or admission starting at ``t``.

        Returns (end time, severity, death time or None, whether the patient was admitted).
        """
        rng = self.rng
        severity = min(
            1.0,
            max(
                0.02,
                condition.severity + 0.003 * (self.age - 60) + 0.04 * (len(self.chronic) - 1.5) + rng.gauss(0, 0.15),
            ),
        )
        hadm = 20_000_000 + self.index * 10 + k
        via_ed = rng.random() < condition.via_ed
        # the ED sends home what it can; the old and frail it admits more readily
        p_home = min(0.95, condition.ed_only * (1.4 - severity) + 0.07) * (0.8 if self.age > 75 else 1.0)
        p_home = min(0.95, p_home * rng.uniform(0.4, 1.6))  # physicians differ in whom they send home
        admitted = not via_ed or rng.random() >= p_home
        if condition.elective:
            t = t.replace(hour=7, minute=rng.randrange(0, 60), second=0)
        if via_ed:
            ed_out = self.ed_stay(k, t, condition, severity, hadm if admitted else None)
            if not admitted:
                return ed_out, severity, None, False
            admit = ed_out
        else:
            admit = t
        disch, died_at = self.admission(hadm, admit, condition, severity, via_ed)
        return disch, severity, died_at, True

    def ed_stay(self, k: int, t: datetime, condition: Condition, severity: float, hadm: int | None) -> datetime:
        rng, sid = self.rng, self.sid
        stay = 30_000_000 + self.index * 10 + k
        out = t + timedelta(hours=rng.uniform(2.5, 9))
        acuity = float(max(1, min(5, round(4.2 - 3.5 * severity + rng.gauss(0, 0.5)))))
        disposition = "ADMITTED" if hadm is not None else "HOME"
        self.rows["edstays"].append(
            (
                sid,
                hadm,
                stay,
                ts(t),
                ts(out),
                self.gender,
                self.demo["race"],
                _pick(rng, ARRIVAL if severity < 0.5 else (("AMBULANCE", 0.85), ("WALK IN", 0.15))),
                disposition,
            )
        )
        v = {n: self.vital(n, condition, severity) for n in VITAL_NORMAL}
        self.rows["triage"].append(
            (
                sid,
                stay,
                *_ed_vitals(v),
                str(rng.randint(0, 8)),
                acuity,
                condition.chief_complaint,
            )
        )
        # vitals every 1-2 hours (more often the sicker the patient), medication reconciliation after the first
        # work-up, each ED medication dispensed when it is ordered, labs repeated a few hours in
        when = t + timedelta(minutes=rng.randint(15, 35))
        while when < out:
            v = {n: self.vital(n, condition, severity) for n in VITAL_NORMAL}
            rhythm = "Atrial fibrillation" if any(c.name == "atrial_fibrillation" for c in self.chronic) else None
            self.rows["vitalsign"].append(
                (
                    sid,
                    stay,
                    ts(when),
                    *_ed_vitals(v),
                    rhythm,
                    str(rng.randint(0, 8)),
                )
            )
            when += timedelta(minutes=(30 + 90 * (1 - severity)) * rng.uniform(0.7, 1.3))
        medrecon_at = t + (out - t) * rng.uniform(0.3, 0.9)  # once the pharmacist gets to the patient
        if medrecon_at < out:
            home = [m for c in self.chronic for m in c.home_meds]
            home += [
                (name, etc)
                for name, etc, base, per_year in COMMON_HOME_MEDS
                if rng.random() < base + per_year * max(0, self.age - 40)
            ]
            for name, etc in dict.fromkeys(home):
                self.rows["medrecon"].append((sid, stay, ts(medrecon_at), name, None, ndc_of(name), None, None, etc))
        dose_at = t + timedelta(minutes=rng.randint(30, 90))
        given = [name for name in condition.ed_meds if rng.random() < 0.85]
        for name in given:
            if dose_at < out:
                self.rows["pyxis"].append((sid, stay, ts(dose_at), None, name, None, None))
            dose_at += timedelta(minutes=rng.randint(15, 100))
        if rng.random() < _sigmoid(10 * (severity - 0.8)):  # a pressor started in the ED
            self.rows["pyxis"].append(
                (sid, stay, ts(min(dose_at, out - timedelta(minutes=5))), None, "Norepinephrine", None, None)
            )
        repeat = dose_at + timedelta(minutes=rng.randint(60, 180))
        if given and repeat < out:
            for name in given[: rng.randint(1, len(given))]:
                self.rows["pyxis"].append((sid, stay, ts(repeat), None, name, None, None))
        # the sicker get a lactate and a blood gas with the first draw, and everyone still in the ED hours later a
        # repeat chemistry (with the condition's markers: a second troponin, a lactate)
        severe = (("Lactate",) if rng.random() < _sigmoid(8 * (severity - 0.5)) else ()) + (
            ("pH", "pO2", "pCO2") if rng.random() < _sigmoid(8 * (severity - 0.6)) else ()
        )
        first_draw = t + timedelta(minutes=rng.randint(20, 45))
        self.labs(hadm, first_draw, condition, severity, ("cbc", "bmp", *condition.panels), (*condition.labs, *severe))
        second_draw = first_draw + timedelta(hours=rng.uniform(2.5, 4.5))
        if second_draw < out:
            self.labs(hadm, second_draw, condition, severity, ("bmp",), (*list(condition.labs)[:2], *severe[:1]))
        codes = self.diagnoses([condition.icd[0]] + [c for c in condition.icd[1:] if rng.random() < 0.4])
        for seq, code in enumerate(codes, start=1):
            self.rows["diagnosis"].append((sid, stay, seq, code, self.icd_version, self.titles[code]))
        self.rows["transfers"].append(
            (
                sid,
                hadm,
                30_000_000 + self.index * 100 + self._next("transfer"),
                "ED",
                "Emergency Department",
                ts(t),
                ts(out),
            )
        )
        if condition.cultures and rng.random() < _sigmoid(8 * (severity - 0.6)):  # cultures before antibiotics
            specimen, test, organism, p_pos = condition.cultures[0]
            drawn = first_draw + timedelta(minutes=rng.randint(5, 30))
            self.culture(None, drawn, specimen, test, organism if rng.random() < p_pos else None)
        if rng.random() < 0.15 + 0.5 * severity and condition.imaging:
            exam, finding = condition.imaging[0]
            self.radiology(hadm, t + timedelta(minutes=rng.randint(60, 120)), exam, finding, condition)
        return out

    def admission(self, hadm: int, admit: datetime, condition: Condition, severity: float, via_ed: bool):
        rng, sid = self.rng, self.sid
        spread = severity - condition.severity
        p_death = _sigmoid(_logit(condition.mortality) - 0.45 + 5.8 * spread + 0.8 * self.frailty)
        dies = rng.random() < p_death
        p_icu = _sigmoid(_logit(condition.icu) - 0.35 + 8.0 * spread)
        icu = rng.random() < (max(p_icu, 0.5) if dies else p_icu)
        # a mild case from the ED stays under observation for a day or so (MIMIC-IV: about 4 admissions in 10
        # are observation stays)
        observation = via_ed and not dies and not icu and severity < 0.45 and rng.random() < 0.8
        los = 0.8 * condition.los_days * math.exp(rng.gauss(0, 0.35)) * (1 + 4.5 * max(0.0, spread) + self.frailty)
        los = rng.uniform(0.3, 1.6) if observation else max(0.4 if severity < 0.3 else 1.0, los)
        icu_stays: list[tuple[datetime, datetime]] = []
        supports: list[list[str]] = []  # per ICU stay: the condition's ICU items it needed
        if icu:
            icu_in = admit + timedelta(hours=rng.uniform(0.5, 20 if severity < 0.7 else 6))
            supports.append(self.organ_support(condition, severity + (0.05 if dies else 0.0)))
            icu_days = self.icu_days(severity, supports[0])
            ventilated = "Invasive Ventilation" in supports[0]
            if rng.random() < (0.3 if ventilated else 0.04):  # a slow wean off the ventilator, or a complication
                icu_days += rng.uniform(5, 15)
            if dies and rng.random() < _sigmoid(8 * (severity - 1.05)):  # refractory: dies within the first days
                icu_days = rng.uniform(0.8, 4.0)
            icu_stays.append((icu_in, icu_in + timedelta(days=icu_days)))
            los = max(los, (icu_stays[0][1] - admit) / DAY + (0 if dies else rng.uniform(1, 4)))
            lungs_or_heart = any(c.name in ("copd", "chronic_heart_failure") for c in self.chronic)
            p_back = 0.005 + 0.05 * severity + 0.05 * self.frailty + 0.2 * ventilated + 0.25 * lungs_or_heart
            if not dies and rng.random() < p_back:
                back_in = icu_stays[0][1] + timedelta(days=rng.uniform(0.5, 2.5))
                supports.append(self.organ_support(condition, severity - 0.1))
                icu_stays.append((back_in, back_in + timedelta(days=self.icu_days(severity - 0.1, supports[1]))))
                los = max(los, (icu_stays[1][1] - admit) / DAY + rng.uniform(1, 3))
        late_death = icu_stays and not dies and rng.random() < 0.04 + 0.01 * self.frailty  # a complication after
        if late_death:  # the ICU, on the ward, that the first ICU day did not foretell
            dies = True
            los = (icu_stays[-1][1] - admit) / DAY + rng.uniform(4, 12)
        disch = admit + timedelta(days=los)
        died_at = None
        comfort_at = None  # when care turned to comfort: most ICU deaths follow a withdrawal of life support
        if dies:
            if late_death:
                died_at = disch
            elif icu_stays:
                died_at = icu_stays[-1][1]
            else:
                died_at = admit + timedelta(days=los * rng.uniform(0.5, 1.0))
            disch = died_at
            if icu_stays and not late_death and rng.random() < 0.65:
                comfort_at = max(icu_stays[-1][0] + HOUR, died_at - timedelta(hours=rng.uniform(6, 36)))
        if condition.elective:
            admission_type = _pick(rng, (("ELECTIVE", 0.5), ("SURGICAL SAME DAY ADMISSION", 0.5)))
            location = ADMISSION_LOCATIONS["elective"]
        elif via_ed:
            admission_type = (
                _pick(rng, (("EU OBSERVATION", 0.6), ("OBSERVATION ADMIT", 0.4)))
                if observation
                else _pick(rng, (("EW EMER.", 0.8), ("URGENT", 0.2)))
            )
            location = ADMISSION_LOCATIONS["ed"]
        else:
            admission_type = _pick(rng, (("DIRECT EMER.", 0.6), ("URGENT", 0.4)))
            location = ADMISSION_LOCATIONS["transfer"]
        if dies:
            discharge_location = "DIED"
        elif self.age > 75 or severity > 0.8:
            discharge_location = _pick(
                rng, (("SKILLED NURSING FACILITY", 0.5), ("REHAB", 0.2), ("HOME HEALTH CARE", 0.3))
            )
        else:
            discharge_location = _pick(rng, (("HOME", 0.75), ("HOME HEALTH CARE", 0.25)))
        self.rows["admissions"].append(
            (
                sid,
                hadm,
                ts(admit),
                ts(disch),
                ts(died_at),
                admission_type,
                None,
                location,
                discharge_location,
                self.demo["insurance"],
                self.demo["language"],
                self.demo["marital"],
                self.demo["race"],
                ts(admit - timedelta(hours=4)) if via_ed else None,
                ts(admit) if via_ed else None,
                int(dies),
            )
        )
        self.hospital_course(hadm, admit, disch, condition, severity, icu_stays, supports, dies, comfort_at)
        return disch, died_at

    def organ_support(self, condition: Condition, level: float) -> list[str]:
        """The condition's ICU items a stay needs: routine care always, escalation (pressors, ventilation,
        dialysis, lines) the likelier the sicker the patient on arrival."""
        rng = self.rng
        return [
            item
            for item in condition.icu_items
            if item not in ESCALATION or rng.random() < _sigmoid(8 * (level + rng.gauss(0, 0.1) - 0.6))
        ]

    def icu_days(self, severity: float, supports: list[str]) -> float:
        """ICU length: organ support, above all a ventilator or dialysis, keeps a patient in the ICU."""
        load = (
            4.5 * ("Invasive Ventilation" in supports)
            + 3.0 * ("Dialysis - CRRT" in supports)
            + 0.7 * ("Norepinephrine" in supports)
        )
        return math.exp(self.rng.gauss(math.log(0.8 + 3.0 * max(0.0, severity) + load), 0.55))

    # ---- inside the hospital -------------------------------------------------------------------
    def acuity(self, t: datetime, admit: datetime, disch: datetime, severity: float, dies: bool) -> float:
        elapsed = (t - admit) / DAY
        if dies:
            return min(1.3, severity * (0.7 + 0.6 * elapsed / max((disch - admit) / DAY, 0.1)))
        return severity * math.exp(-elapsed / 2.5)

    def hospital_course(self, hadm, admit, disch, condition, severity, icu_stays, icu_supports, dies, comfort_at):
        rng, sid = self.rng, self.sid
        transfer = lambda: 30_000_000 + self.index * 100 + self._next("transfer")  # noqa: E731
        self.rows["transfers"].append(
            (sid, hadm, transfer(), "admit", condition.ward, ts(admit), ts(icu_stays[0][0] if icu_stays else disch))
        )
        self.rows["services"].append((sid, hadm, ts(admit), None, condition.service))
        self.poe(
            hadm,
            admit + timedelta(minutes=10),
            [
                ("ADT orders", "Admit"),
                ("Medications", None),
                ("Lab", None),
                ("General Care", "Vitals/Monitoring"),
                ("Nutrition", "Diet"),
                *condition.orders,
            ],
        )
        for j, (icu_in, icu_out) in enumerate(icu_stays):
            stay = 40_000_000 + self.index * 20 + self._next("icu")
            icu_out = min(icu_out, disch)
            self.rows["transfers"].append(
                (sid, hadm, transfer(), "transfer", condition.icu_unit, ts(icu_in), ts(icu_out))
            )
            self.poe(hadm, icu_in - timedelta(minutes=20), [("ADT orders", "Transfer"), ("Critical Care", None)])
            course = (admit, disch, severity, dies, comfort_at if j == len(icu_stays) - 1 else None)
            self.icu_stay(hadm, stay, icu_in, icu_out, condition, icu_supports[j], course)
            if icu_out < disch:
                self.rows["transfers"].append(
                    (
                        sid,
                        hadm,
                        transfer(),
                        "transfer",
                        condition.ward,
                        ts(icu_out),
                        ts(disch if j == len(icu_stays) - 1 else icu_stays[j + 1][0]),
                    )
                )
        if not dies:
            self.rows["transfers"].append((sid, hadm, transfer(), "discharge", None, ts(disch), None))
        self.medications(hadm, admit, disch, condition, severity, icu_stays)
        self.daily_orders(hadm, admit, disch, condition, severity, dies)
        # daily labs, drawn in the early morning, with their orders the night before
        draw = admit + timedelta(minutes=rng.randint(60, 150))
        first = True
        while draw < disch:
            acuity = self.acuity(draw, admit, disch, severity, dies)
            panels = ("cbc", "bmp", "lytes", *(condition.panels if first else ()))
            extra = tuple(condition.labs) if first else tuple(list(condition.labs)[:2])
            self.poe(hadm, draw - timedelta(minutes=rng.randint(20, 90)), [("Lab", None)])
            severe = ("Lactate", "pH", "pO2", "pCO2") if acuity > 0.55 else ()
            self.labs(hadm, draw, condition, acuity, panels, (*extra, *severe))
            afternoon = draw.replace(hour=rng.randint(13, 18), minute=rng.randint(0, 59))
            if acuity > 0.3 and afternoon < disch:  # the acutely ill are checked again later in the day
                self.labs(hadm, afternoon, condition, acuity, ("bmp",), (*list(condition.labs)[:1], *severe[:1]))
            first = False
            nxt = (draw + DAY).replace(hour=5, minute=rng.randint(0, 59))
            draw = nxt if nxt > draw + timedelta(hours=8) else nxt + DAY
        cultures = list(condition.cultures)
        if rng.random() < 0.15 + 0.3 * severity:  # a urine culture sent with the admission work-up
            cultures.append(("URINE", "URINE CULTURE", "ESCHERICHIA COLI", 0.2))
        for specimen, test, organism, p_pos in dict.fromkeys(cultures):
            self.culture(
                hadm,
                admit + timedelta(minutes=rng.randint(30, 180)),
                specimen,
                test,
                organism if rng.random() < p_pos * (0.6 + severity) else None,
            )
        if rng.random() < 0.5:  # a chest film with the admission work-up, whatever the complaint
            when = admit + timedelta(hours=rng.uniform(0.5, 6))
            if when < disch:
                self.poe(hadm, when - timedelta(minutes=30), [("Radiology", None)])
                self.radiology(hadm, when, "CHEST (PORTABLE AP)", "No acute cardiopulmonary process.", condition)
        for exam, finding in condition.imaging:
            when = admit + timedelta(hours=rng.uniform(1, 20))
            follow_up = when + timedelta(days=rng.uniform(1.5, 4))
            for at in (when, follow_up) if rng.random() < 0.6 else (when,):  # a follow-up study of the same
                if at < disch:
                    self.poe(hadm, at - timedelta(minutes=40), [("Radiology", None)])
                    self.radiology(hadm, at, exam, finding, condition)
        span = min(2.0, (disch - admit) / DAY)
        chosen = [code for code, p in condition.procedures if rng.random() < p]
        chosen += [code for code, base, extra in GENERAL_PROCEDURES if rng.random() < base + extra * severity]
        if any("Invasive Ventilation" in supports for supports in icu_supports):
            chosen.append("0BH17EZ")
        for seq, code in enumerate(dict.fromkeys(chosen), start=1):
            when = admit + timedelta(days=rng.uniform(0, span))
            self.rows["procedures_icd"].append((sid, hadm, seq, day(when), self.procedure(code), self.icd_version))
        codes = [condition.icd[0]] + [c for c in condition.icd[1:] if rng.random() < 0.8]
        acute = [code for code, base, extra in ACUTE_CODES if rng.random() < base + extra * severity]
        codes = self.diagnoses(codes + [c.icd for c in self.chronic] + acute + self.background)
        for seq, code in enumerate(codes, start=1):
            self.rows["diagnoses_icd"].append((sid, hadm, seq, code, self.icd_version))
        if not dies:
            self.poe(hadm, disch - timedelta(hours=rng.uniform(1, 4)), [("ADT orders", "Discharge")])
            self.discharge_note(hadm, admit, disch, condition, icu_stays, codes)

    def daily_orders(self, hadm, admit, disch, condition, severity, dies) -> None:
        """Orders written through each hospital day, more of them while the patient is acutely ill."""
        rng = self.rng
        choices = DAILY_ORDERS + condition.orders
        if not dies:  # discharge planning: the frailer and the more comorbid, the more of it
            planning = min(0.95, 0.05 + 2.5 * self.frailty + 0.15 * len(self.chronic))
            for order in (("Consults", "Social Work"), ("Consults", "Case Management"), ("Nursing", "Teaching")):
                if rng.random() < planning:
                    self.poe(hadm, disch - timedelta(hours=rng.uniform(2, 20)), [order])
        # most orders are entered together after the morning round, the rest as needs arise through the day
        start = admit
        while start < disch:
            acuity = self.acuity(start, admit, disch, severity, dies)
            rounds = start.replace(hour=9, minute=0, second=0) + timedelta(minutes=rng.randint(0, 120))
            rounds += DAY if rounds < start else timedelta(0)
            for _ in range(5 + round(5 * acuity) + rng.randint(0, 5)):
                if rng.random() < 0.7:
                    when = rounds + timedelta(minutes=rng.randint(0, 15))
                else:
                    when = start + timedelta(minutes=rng.randint(30, 24 * 60))
                if when < disch:
                    self.poe(hadm, when, [rng.choice(choices)])
            start += DAY

    def poe(self, hadm: int, t: datetime, orders) -> None:
        for order_type, subtype in orders:
            n = self._next("poe")
            self.rows["poe"].append(
                (f"{self.sid}-{n}", n, self.sid, hadm, ts(t), order_type, subtype, "New", None, None, None, "Inactive")
            )

    def labs(self, hadm, t, condition, acuity, panels, extra=()) -> None:
        specimen = self.index * 1000 + self._next("specimen")
        labels = dict.fromkeys([lab for p in panels for lab in PANELS[p]] + list(extra))
        for label in labels:
            lab = LABS[label]
            value = self.lab_value(label, condition, acuity)
            flag = "abnormal" if value < lab.low or value > lab.high else None
            text = f"{value:.{lab.decimals}f}"
            self.rows["labevents"].append(
                (
                    self.index * 100_000 + self._next("lab"),
                    self.sid,
                    hadm,
                    specimen,
                    lab.itemid,
                    None,
                    ts(t),
                    ts(t + timedelta(minutes=50)),
                    text,
                    value,
                    lab.unit or None,
                    lab.low,
                    lab.high,
                    flag,
                    "ROUTINE",
                    None,
                )
            )

    def culture(self, hadm, t, specimen, test, organism) -> None:
        rng = self.rng
        micro_id = lambda: self.index * 1000 + self._next("micro")  # noqa: E731
        for _ in range(2 if specimen == "BLOOD CULTURE" else 1):  # blood cultures come as two sets
            base = (self.sid, hadm, self.index * 1000 + self._next("micro_specimen"), None, day(t), ts(t), specimen)
            if organism is None:
                self.rows["microbiologyevents"].append(
                    (micro_id(), *base, test, None, None, None, None, None, "NO GROWTH.")
                )
                continue
            for antibiotic in ANTIBIOTICS[: rng.randint(6, len(ANTIBIOTICS))]:
                interpretation = "R" if rng.random() < 0.2 else "S"
                self.rows["microbiologyevents"].append(
                    (micro_id(), *base, test, organism, 1, antibiotic, "<=1", interpretation, None)
                )

    def radiology(self, hadm, t, exam, finding, condition) -> None:
        note_id = f"{self.sid}-RR-{self._next('rr')}"
        text = (
            f"EXAMINATION:  {exam}\n\nINDICATION:  {condition.chief_complaint}\n\nFINDINGS:  {finding}\n\n"
            f"IMPRESSION:  {finding}"
        )
        self.rows["radiology"].append((note_id, self.sid, hadm, "RR", self.counters["rr"], ts(t), ts(t + HOUR), text))
        exam_code, cpt_code = EXAM_CODES[exam]
        for field_name, value in (("exam_code", exam_code), ("exam_name", exam), ("cpt_code", cpt_code)):
            self.rows["radiology_detail"].append((note_id, self.sid, field_name, value, 1))

    def prescription(self, hadm: int, name: str, drug, start: datetime, stop: datetime) -> None:
        self.rows["prescriptions"].append(
            (
                self.sid,
                hadm,
                self.index * 1000 + self._next("pharmacy"),
                None,
                None,
                None,
                ts(start),
                ts(stop),
                "MAIN",
                name,
                None,
                None,
                ndc_of(name),
                drug.strength,
                None,
                drug.dose,
                drug.unit,
                None,
                None,
                None,
                drug.route,
            )
        )

    def medications(self, hadm, admit, disch, condition, severity, icu_stays) -> None:
        rng = self.rng
        drugs = [d for d in condition.drugs if d != "Norepinephrine" or icu_stays]
        drugs += [d for c in self.chronic for d in c.inpatient_drugs]
        drugs += list(COMMON_INPATIENT_DRUGS)
        if condition.name not in ("gi_bleed", "stroke", "hip_osteoarthritis"):
            drugs.append("Heparin")
        drugs = list(dict.fromkeys(drugs))
        verified = admit + timedelta(minutes=rng.randint(40, 360))  # the admission orders, verified together
        for name in drugs:
            drug = DRUGS[name]
            start = verified + timedelta(minutes=rng.randint(0, 10))
            stop = disch if name != "Norepinephrine" else min(disch, icu_stays[0][1])
            renewals = [start]  # an order is renewed (or its dose changed) every few days, on the morning round
            while (renewed := self.morning(renewals[-1] + timedelta(days=rng.uniform(1, 3.5)))) < stop:
                renewals.append(renewed)
            for begin, end in zip(renewals, [*renewals[1:], stop], strict=True):
                self.prescription(hadm, name, drug, begin, end)
            every = timedelta(hours=drug.every_hours)
            as_needed = name in AS_NEEDED
            when = self.first_dose(start, drug.every_hours, as_needed)
            while when < stop:
                if as_needed and rng.random() > 0.3:
                    when += every
                    continue
                event = "Administered" if rng.random() < 0.95 else rng.choice(("Not Given", "Held"))
                given = when + timedelta(minutes=rng.randint(0, 25))
                self.rows["emar"].append(
                    (
                        self.sid,
                        hadm,
                        f"{self.sid}-{self._next('emar')}",
                        1,
                        None,
                        None,
                        None,
                        ts(given),
                        name,
                        event,
                        ts(when),
                        ts(given + timedelta(minutes=5)),
                    )
                )
                when += every

    def morning(self, t: datetime) -> datetime:
        """The pharmacist's verification time of an order changed on day ``t``'s morning round."""
        return t.replace(hour=11, minute=self.rng.randint(0, 30), second=0)

    def first_dose(self, verified: datetime, every_hours: int, as_needed: bool) -> datetime:
        """A scheduled drug's first dose: the next medication pass of its interval (passes fall on a grid
        through 09:00, so drugs due together are given in one round); an as-needed drug's first moment of need."""
        if as_needed:
            return verified + timedelta(minutes=self.rng.randint(30, 180))
        hour = verified.replace(minute=0, second=0) + HOUR
        while (hour.hour - 9) % every_hours:
            hour += HOUR
        return hour

    def icu_stay(self, hadm, stay, icu_in, icu_out, condition, items, course) -> None:
        rng, sid = self.rng, self.sid
        admit, disch, severity, dies, comfort_at = course
        los = (icu_out - icu_in) / DAY
        self.rows["icustays"].append(
            (sid, hadm, stay, condition.icu_unit, condition.icu_unit, ts(icu_in), ts(icu_out), round(los, 4))
        )
        ventilated = "Invasive Ventilation" in items
        # lines and supports placed in the first hours: their insertion dates are charted at every assessment
        procedures = ["18 Gauge", *(["20 Gauge"] if rng.random() < 0.5 else []), "EKG"]
        procedures += [p for p in items if p in ICU_PROCEDURES]
        placed: dict[str, datetime] = {}
        for name in procedures:
            itemid, unit = ICU_PROCEDURES[name]
            start = icu_in + timedelta(minutes=rng.randint(15, 120)) - (DAY if name == "18 Gauge" else timedelta(0))
            start = max(start, admit)
            if start >= icu_out:
                continue
            placed[name] = start
            minutes = round((icu_out - start) / timedelta(minutes=1)) if unit == "min" else 1
            self.rows["procedureevents"].append(
                (sid, hadm, stay, None, ts(start), ts(icu_out), ts(start), itemid, minutes, unit)
            )
        screened = icu_in + timedelta(minutes=rng.randint(30, 180))  # every ICU admission is screened for MRSA
        mrsa = "STAPH AUREUS COAG +" if rng.random() < 0.08 else None
        self.culture(hadm, screened, "MRSA SCREEN", "MRSA SCREEN", mrsa)
        rhythm = RHYTHMS[2] if any(c.name == "atrial_fibrillation" for c in self.chronic) else None
        inputs = [i for i in items if i in ICU_INPUTS]
        inputs += ["Fentanyl (Concentrate)"] if ventilated else []  # sedation on the ventilator
        inputs += [r for r in ("Potassium Chloride", "Magnesium Sulfate") if rng.random() < 0.6]  # repletion
        oliguric = condition.name == "aki" or any(c.name == "ckd" for c in self.chronic)
        drains = ["Foley", *(o for o, p in (("Fecal Bag", 0.3), ("Chest Tube #1", 0.15)) if rng.random() < p)]
        if comfort_at is not None and comfort_at < icu_out:  # comfort measures: a morphine drip until death
            self.poe(hadm, comfort_at - HOUR, [("Consults", "Palliative Care")])
        elif not dies and rng.random() < 0.08 * severity:  # goals of care discussed with a survivor's family
            self.poe(hadm, icu_in + (icu_out - icu_in) * rng.random(), [("Consults", "Palliative Care")])
        # Vitals and oxygen (or the ventilator's settings) charted hourly; blood gases and lactate every 6 h while
        # unstable (every 3 h in shock); a portable chest film each morning; every 4 h the nurse's round, charted
        # with that hour's vitals (the head-to-toe findings), just after each line's insertion date and each
        # drain; and every 6 h the running infusions. Charting at shared times keeps an ICU day to a few dozen
        # events, as the reference's 1,200-event cap per patient needs (an event is a run of one table's rows).
        intubated = placed.get("Invasive Ventilation", icu_in)
        t = icu_in + timedelta(minutes=rng.randint(5, 30))
        next_gas = t + timedelta(minutes=rng.randint(30, 90))
        next_round = next_shift = t
        film = (icu_in + DAY).replace(hour=4, minute=rng.randint(0, 59))
        while t < icu_out:
            acuity = self.acuity(t, admit, disch, severity, dies)
            charted, until = ts(t), ts(t + timedelta(minutes=20))
            for itemid, unit, vital in ICU_CHART.values():
                value = self.vital(vital, condition, acuity)
                row = (sid, hadm, stay, None, charted, until, itemid, f"{value:g}", value, unit, 0)
                self.rows["chartevents"].append(row)
            self.breathing(hadm, stay, charted, until, acuity, ventilated and intubated <= t)
            if t >= next_round:  # drains emptied and lines checked just before the round's assessment
                self.assessment(hadm, stay, t, acuity, rhythm, ventilated, placed)
                checked_at = t - timedelta(minutes=rng.randint(2, 10))
                checked = ts(checked_at)
                for name, start in placed.items():
                    date_item = LINE_DATES.get(name)
                    if date_item is not None and start < checked_at:
                        dated = (sid, hadm, stay, None, checked, until, ICU_DATETIMES[date_item], ts(start), "Date", 0)
                        self.rows["datetimeevents"].append(dated)
                for drain in drains:
                    itemid, unit = ICU_OUTPUTS[drain]
                    volume = max(0.0, rng.gauss(25 if drain == "Foley" and oliguric else 70, 15) * 4)
                    drained = (sid, hadm, stay, None, checked, checked, itemid, round(volume), unit)
                    self.rows["outputevents"].append(drained)
                next_round = t + timedelta(hours=4)
            if t >= next_shift:
                end = min(icu_out, t + timedelta(hours=6))
                comfort = comfort_at is not None and comfort_at <= t
                running = [*inputs, *(["Morphine Sulfate"] if comfort else [])]
                if not comfort:  # refractory shock: a second pressor, then bicarbonate
                    running += [name for name, worse in SHOCK_ESCALATION if acuity > worse]
                for name in running:
                    self.infusion(hadm, stay, name, t, end)
                next_shift = end
            if acuity > 0.5 and t >= next_gas:
                self.labs(hadm, t + timedelta(minutes=rng.randint(5, 40)), condition, acuity, ("abg",), ("Lactate",))
                next_gas = t + timedelta(hours=3 if acuity > 0.85 else 6)
            if t >= film:
                self.poe(hadm, film - timedelta(hours=1), [("Radiology", None)])
                self.radiology(hadm, film, "CHEST (PORTABLE AP)", "Lines and tubes unchanged.", condition)
                itemid, unit = ICU_PROCEDURES["Chest X-Ray"]
                self.rows["procedureevents"].append(
                    (sid, hadm, stay, None, ts(film), ts(film), ts(film), itemid, 1, unit)
                )
                film += DAY
            t += HOUR

    def breathing(self, hadm, stay, charted, until, acuity, ventilated) -> None:
        """The hour's oxygen: the ventilator's settings and readings, else the oxygen device and its flow."""
        rng, sid, chart = self.rng, self.sid, self.rows["chartevents"]
        if ventilated:
            for label, (itemid, unit, mean, sd) in ICU_VENTILATOR.items():
                if label == "Ventilator Mode":
                    text, value = ("CMV/ASSIST/AutoFlow" if acuity > 0.5 else "CPAP/PSV"), None
                else:
                    value = round(max(0.0, rng.gauss(mean * (0.8 + 0.4 * min(acuity, 1.0)), sd)), 1)
                    text = f"{value:g}"
                chart.append((sid, hadm, stay, None, charted, until, itemid, text, value, unit or None, 0))
            return
        flow = round(max(0.0, rng.gauss(1 + 5 * max(0.0, acuity - 0.2), 1)))
        device = "None" if flow == 0 else ("Nasal cannula" if flow <= 6 else "Non-rebreather")
        (device_item, _), (flow_item, flow_unit) = ICU_OXYGEN.values()
        chart.append((sid, hadm, stay, None, charted, until, device_item, device, None, None, 0))
        chart.append((sid, hadm, stay, None, charted, until, flow_item, str(flow), float(flow), flow_unit, 0))

    def assessment(self, hadm, stay, t, acuity, rhythm, ventilated, placed) -> None:
        """A nurse's 4-hourly round: consciousness, sedation, pain, skin, rhythm, and the head-to-toe findings."""
        rng, sid = self.rng, self.sid
        drowsy = min(1.0, max(0.0, acuity - 0.3 + (0.4 if ventilated else 0.0)))
        values = {
            "GCS - Eye Opening": 4 - round(3 * drowsy * rng.uniform(0.6, 1.0)),
            "GCS - Verbal Response": 1 if ventilated else 5 - round(4 * drowsy * rng.uniform(0.6, 1.0)),
            "GCS - Motor Response": 6 - round(5 * drowsy * rng.uniform(0.4, 1.0)),
            "Richmond-RAS Scale": -round(4 * drowsy * rng.uniform(0.5, 1.0)),
            "Pain Level": 0 if drowsy > 0.6 else rng.randint(0, 7),
            "Braden Score": 20 - round(9 * drowsy * rng.uniform(0.6, 1.0)),
            "Heart Rhythm": rhythm or (RHYTHMS[1] if acuity > 0.6 and rng.random() < 0.5 else RHYTHMS[0]),
        }
        if "Arterial Line" in placed and placed["Arterial Line"] < t:
            values["Arterial Blood Pressure mean"] = round(rng.gauss(82 - 15 * acuity, 8))
        else:
            values["Non Invasive Blood Pressure mean"] = round(rng.gauss(85 - 12 * acuity, 9))
        charted, until = ts(t), ts(t + timedelta(minutes=15))
        for label, value in values.items():
            itemid, unit = ICU_ASSESSMENT[label]
            number = value if isinstance(value, int) else None
            self.rows["chartevents"].append(
                (sid, hadm, stay, None, charted, until, itemid, str(value), number, unit or None, 0)
            )
        ill = 0.1 + 0.8 * drowsy
        for itemid, usual, when_ill in ICU_ROUND.values():
            finding = when_ill if rng.random() < ill else usual
            self.rows["chartevents"].append((sid, hadm, stay, None, charted, until, itemid, finding, None, None, 0))

    def infusion(self, hadm, stay, name, start, end) -> None:
        """One row of a running ICU input: what ran from ``start`` to ``end`` (the next 6-hourly charting)."""
        rng, sid = self.rng, self.sid
        itemid, amount_unit, rate_unit = ICU_INPUTS[name]
        amount = round(rng.uniform(100, 1000) if amount_unit == "mL" else rng.uniform(1, 50), 2)
        rate = round(amount / max((end - start) / HOUR, 0.1), 2) if rate_unit else None
        row = (
            sid,
            hadm,
            stay,
            None,
            ts(start),
            ts(end),
            ts(start),
            itemid,
            amount,
            amount_unit,
            rate,
            rate_unit or None,
        )
        self.rows["inputevents"].append(row)
        if amount_unit == "mL":
            water, unit = ICU_INGREDIENTS["Water"]
            self.rows["ingredientevents"].append((*row[:7], water, amount, unit, rate, rate_unit or None))

    def discharge_note(self, hadm, admit, disch, condition, icu_stays, codes) -> None:
        course = (
            f"Admitted for {condition.chief_complaint.lower()}. "
            + ("Required ICU care. " if icu_stays else "")
            + f"Treated with {', '.join(condition.drugs[:3]) or 'supportive care'}."
        )
        diagnoses = "\n".join(self.titles[c] for c in codes)
        history = ", ".join(c.name.replace("_", " ") for c in self.chronic) or "no significant history"
        text = (
            f"Name:  ___                     Unit No:   ___\n\nAdmission Date:  ___              "
            f"Discharge Date:   ___\n\nSex:   {self.gender}\n\nService: {condition.service}\n\n"
            f"Chief Complaint:\n{condition.chief_complaint}\n\nPast Medical History:\n{history}\n\n"
            f"Brief Hospital Course:\n{course}\n\nDischarge Diagnosis:\n{diagnoses}\n\n"
            "Discharge Condition:\nMental Status: Clear and coherent.\n\nFollowup Instructions:\n___"
        )
        note_id = f"{self.sid}-DS-{self._next('ds')}"
        self.rows["discharge"].append(
            (note_id, self.sid, hadm, "DS", self.counters["ds"], ts(disch), ts(disch + timedelta(hours=6)), text)
        )
