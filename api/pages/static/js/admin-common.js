// What the administration pages' modules share: table cells, and a success
// message that replaces the errors of earlier attempts (an error stays until
// then: api.js keeps error messages until removed).
import { showMessage } from "./api.js";

export function cell(content) {
  const td = document.createElement("td");
  if (content instanceof Node) td.append(content); else td.textContent = content ?? "";
  return td;
}

// a row of one cell across ``columns`` saying ``text`` (empty tables, no match)
export function noteRow(columns, text) {
  const tr = document.createElement("tr");
  const td = cell(text);
  td.colSpan = columns;
  tr.append(td);
  return tr;
}

export function succeeded(text, options) {
  for (const element of document.querySelectorAll("#notices .message.error")) element.remove();
  return showMessage(text, "success", options);
}
