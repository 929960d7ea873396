// The secret of a key just issued or rotated, shown once. The server renders it in an open <dialog> in
// the page's flow (readable without JavaScript, its copy buttons hidden); this shows the copy buttons and
// upgrades the dialog to a modal one: Esc or "Close" closes it, focus starts on the first copy button, and
// "Show the stream key again" reopens it until the page is left (a reload never shows the secret again).
import "../copy.js";

const dialog = document.getElementById("key-dialog");
const reopen = document.getElementById("key-reopen");

function openModal() {
  if (dialog.open) dialog.close(); // showModal() refuses a dialog already open as a non-modal one
  dialog.showModal();
  dialog.querySelector("button[data-copy]")?.focus();
}

for (const element of document.querySelectorAll("[data-js-only]")) element.hidden = false; // the copy buttons

if (dialog && typeof dialog.showModal === "function") {
  for (const element of dialog.querySelectorAll("[data-modal-only]")) element.hidden = false;
  dialog.addEventListener("close", () => {
    if (dialog.open || !reopen) return; // the close() of the upgrade below, or already reopened
    reopen.hidden = false;
    reopen.querySelector("button")?.focus();
  });
  reopen?.querySelector("button")?.addEventListener("click", () => {
    reopen.hidden = true;
    openModal();
  });
  openModal();
}
