// /admin/facilities: imaging centers (/api/imaging-centers) and modalities
// (/api/modalities): listed, added, edited. One form per kind adds, or, after
// "Edit" on a row, saves that row's changes (PATCH).
import { api, messageOf, showMessage } from "./api.js";
import { cell, noteRow, succeeded } from "./admin-common.js";

let centers = [];

function emptyRow(body, columns, text) {
  body.replaceChildren(noteRow(columns, text));
}

// a form that adds a record, or edits one after edit(record)
function editor(form, { noun, path, fields, optional = [], reload }) {
  const heading = form.querySelector("h3");
  const submit = form.querySelector('button[type="submit"]');
  const cancel = form.querySelector("[data-cancel]");
  const idField = form.elements.namedItem("id");
  const addHeading = heading.textContent;
  const addLabel = submit.textContent;

  function reset() {
    form.reset();
    idField.value = "";
    heading.textContent = addHeading;
    submit.textContent = addLabel;
    cancel.hidden = true;
  }

  cancel.addEventListener("click", reset);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const editing = idField.value;
    const body = {};
    for (const name of fields) {
      let value = form.elements.namedItem(name).value.trim();
      if (name === "imaging_center_id") value = Number(value);
      if (value === "" && optional.includes(name)) value = null;
      if (value === null && !editing) continue;
      body[name] = value;
    }
    try {
      const saved = editing
        ? await api(`${path}/${editing}`, { method: "PATCH", json: body })
        : await api(path, { method: "POST", json: body });
      succeeded(`${noun} ${saved.name} ${editing ? "saved" : "added"}.`);
      reset();
      await reload();
    } catch (error) {
      showMessage(messageOf(error));
    }
  });

  return (record) => {
    idField.value = record.id;
    for (const name of fields) form.elements.namedItem(name).value = record[name] ?? "";
    heading.textContent = `Edit ${noun.toLowerCase()} ${record.name}`;
    submit.textContent = "Save changes";
    cancel.hidden = false;
    form.elements.namedItem(fields[0]).focus();
  };
}

function editButton(label, onClick) {
  const element = document.createElement("button");
  element.type = "button";
  element.className = "button secondary";
  element.textContent = "Edit";
  element.setAttribute("aria-label", label);
  element.addEventListener("click", onClick);
  return element;
}

const centerForm = document.getElementById("center-form");
const editCenter = editor(centerForm, {
  noun: "Imaging center",
  path: "/api/imaging-centers",
  fields: ["name", "code", "location", "contact_number"],
  optional: ["location", "contact_number"],
  reload: loadAll,
});

const modalityForm = document.getElementById("modality-form");
const editModality = editor(modalityForm, {
  noun: "Modality",
  path: "/api/modalities",
  fields: ["imaging_center_id", "name", "type", "dicom_ae_title", "station_name", "status"],
  optional: ["station_name"],
  reload: loadAll,
});

async function all(path) {
  // every page of a listing (a node has tens of centers and modalities, not thousands)
  const items = [];
  for (let offset = 0; ; offset += 200) {
    const page = await api(`${path}?limit=200&offset=${offset}&sort=name`);
    items.push(...page.items);
    if (items.length >= page.total || !page.items.length) return items;
  }
}

function renderCenters() {
  const body = document.querySelector("#centers tbody");
  if (!centers.length) return emptyRow(body, 5, "No imaging centers yet.");
  body.replaceChildren(...centers.map((center) => {
    const tr = document.createElement("tr");
    tr.append(cell(center.name), cell(center.code), cell(center.location), cell(center.contact_number),
      cell(editButton(`Edit imaging center ${center.name}`, () => editCenter(center))));
    return tr;
  }));
  const select = document.getElementById("modality-center");
  const chosen = select.value;
  select.replaceChildren(...centers.map((center) => new Option(`${center.name} (${center.code})`, center.id)));
  if (chosen) select.value = chosen;
}

function renderModalities(modalities) {
  const body = document.querySelector("#modalities tbody");
  if (!modalities.length) return emptyRow(body, 7, "No modalities yet.");
  const names = new Map(centers.map((center) => [center.id, center.name]));
  body.replaceChildren(...modalities.map((modality) => {
    const tr = document.createElement("tr");
    tr.append(cell(modality.name), cell(modality.type), cell(modality.dicom_ae_title), cell(modality.station_name),
      cell(names.get(modality.imaging_center_id) ?? String(modality.imaging_center_id)), cell(modality.status),
      cell(editButton(`Edit modality ${modality.name}`, () => editModality(modality))));
    return tr;
  }));
}

async function loadAll() {
  try {
    centers = await all("/api/imaging-centers");
    renderCenters();
    renderModalities(await all("/api/modalities"));
  } catch (error) {
    showMessage(messageOf(error));
  }
}

loadAll();
