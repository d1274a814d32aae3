// /admin/users: the accounts (GET /api/users), a new account (POST /api/users),
// and per account: change the role, deactivate or reactivate (PATCH
// /api/users/{id}), set a new password (POST /api/users/{id}/password). Every
// refusal (password policy, a taken username, the last admin) is the API's
// own message. Service accounts are listed read-only (GET /api/service-accounts).
import { api, messageOf, showMessage, timeElement } from "./api.js";
import { cell, noteRow, succeeded } from "./admin-common.js";

const table = document.querySelector("#users tbody");
const total = document.getElementById("users-total");
const roleOptions = document.getElementById("role-options");
let search = "";

function button(text, onClick, kind = "secondary") {
  const element = document.createElement("button");
  element.type = "button";
  element.className = `button ${kind}`;
  element.textContent = text;
  element.addEventListener("click", onClick);
  return element;
}

async function change(user, changes, done) {
  try {
    const updated = await api(`/api/users/${user.id}`, { method: "PATCH", json: changes });
    succeeded(done(updated));
    await load();
  } catch (error) {
    showMessage(messageOf(error));
  }
}

function roleControl(user) {
  const wrap = document.createElement("div");
  wrap.className = "row-actions";
  const select = document.createElement("select");
  select.id = `role-${user.id}`;
  select.setAttribute("aria-label", `Role of ${user.username}`);
  select.append(roleOptions.content.cloneNode(true));
  select.value = user.role;
  const save = button("Change role", () => {
    if (select.value === user.role) {
      showMessage(`${user.username} already has that role.`, "info");
      return;
    }
    change(user, { role: select.value }, (u) => `${u.username} is now ${u.role.replace("_", " ")}.`);
  });
  save.setAttribute("aria-label", `Change the role of ${user.username}`);
  wrap.append(select, save);
  return wrap;
}

function passwordControl(user) {
  const details = document.createElement("details");
  const summary = document.createElement("summary");
  summary.textContent = "Reset password";
  summary.setAttribute("aria-label", `Reset the password of ${user.username}`);
  const form = document.createElement("form");
  const id = `password-${user.id}`;
  const label = document.createElement("label");
  label.htmlFor = id;
  label.textContent = `New password for ${user.username}`;
  label.className = "visually-hidden";
  const input = document.createElement("input");
  input.type = "password";
  input.id = id;
  input.autocomplete = "new-password";
  input.placeholder = "New password";
  const submit = document.createElement("button");
  submit.type = "submit";
  submit.className = "button";
  submit.textContent = "Set password";
  form.append(label, input, submit);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    try {
      await api(`/api/users/${user.id}/password`, { method: "POST", json: { password: input.value } });
      succeeded(`New password set for ${user.username}; their sessions were ended.`);
      input.value = "";
      details.open = false;
    } catch (error) {
      showMessage(messageOf(error));
      input.focus();
    }
  });
  details.append(summary, form);
  return details;
}

function row(user) {
  const tr = document.createElement("tr");
  tr.dataset.username = user.username;
  const state = document.createElement("span");
  state.textContent = user.is_active ? "Active" : "Deactivated";
  if (!user.is_active) state.className = "state-inactive";
  const actions = document.createElement("div");
  actions.className = "row-actions";
  const toggle = user.is_active
    ? button("Deactivate", () => change(user, { is_active: false }, (u) => `${u.username} is deactivated; their sessions were ended.`))
    : button("Reactivate", () => change(user, { is_active: true }, (u) => `${u.username} is active again.`));
  toggle.setAttribute("aria-label", `${toggle.textContent} ${user.username}`);
  actions.append(toggle, passwordControl(user));
  tr.append(
    cell(user.username),
    cell(user.display_name),
    cell(roleControl(user)),
    cell(state),
    cell(timeElement(user.created_at)),
    cell(actions),
  );
  return tr;
}

async function load() {
  const query = new URLSearchParams({ sort: "username", limit: "200" });
  if (search) query.set("q", search);
  try {
    const page = await api(`/api/users?${query}`);
    table.replaceChildren(...page.items.map(row));
    if (!page.items.length) table.append(noteRow(6, "No accounts match."));
    total.textContent = page.total > page.items.length
      ? `Showing ${page.items.length} of ${page.total} accounts: search to narrow.`
      : `${page.total} accounts.`;
  } catch (error) {
    showMessage(messageOf(error));
  }
}

document.getElementById("user-filter").addEventListener("submit", (event) => {
  event.preventDefault();
  search = document.getElementById("user-search").value.trim();
  load();
});

const createForm = document.getElementById("create-user");
createForm.addEventListener("submit", async (event) => {
  event.preventDefault();
  const data = new FormData(createForm);
  const body = { username: data.get("username").trim(), role: data.get("role"), password: data.get("password") };
  const displayName = data.get("display_name").trim();
  const email = data.get("email").trim();
  if (displayName) body.display_name = displayName;
  if (email) body.email = email;
  try {
    const user = await api("/api/users", { method: "POST", json: body });
    succeeded(`Account ${user.username} created.`);
    createForm.reset();
    await load();
  } catch (error) {
    showMessage(messageOf(error));
  }
});

async function loadServiceAccounts() {
  const body = document.querySelector("#service-accounts tbody");
  try {
    const page = await api("/api/service-accounts?limit=200");
    const rows = page.items.map((account) => {
      const tr = document.createElement("tr");
      tr.append(cell(account.name), cell(account.role.replace("_", " ")), cell(account.description),
        cell(account.is_active ? "Active" : "Deactivated"), cell(String(account.active_keys)),
        cell(timeElement(account.created_at)));
      return tr;
    });
    if (!rows.length) rows.push(noteRow(6, "No service accounts."));
    body.replaceChildren(...rows);
  } catch (error) {
    showMessage(messageOf(error));
  }
}

load();
loadServiceAccounts();
