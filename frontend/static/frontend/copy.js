// Copy buttons: <button data-copy="element-id"> copies that element's value (a field) or its text.
// Optional: data-copy-name="the stream key" names it in the announcement written to the nearest
// [data-copy-status] live region. Where the Clipboard API is missing (plain-HTTP consoles are not a
// secure context) the text is selected and copied with execCommand, or left selected for Ctrl+C.

const RESET_MS = 2500;

function textOf(element) {
  return typeof element.value === "string" ? element.value : element.textContent;
}

function selectContents(element) {
  if (typeof element.select === "function") {
    element.select();
    return;
  }
  const range = document.createRange();
  range.selectNodeContents(element);
  const selection = window.getSelection();
  selection.removeAllRanges();
  selection.addRange(range);
}

async function copyText(element) {
  const text = textOf(element);
  if (navigator.clipboard && window.isSecureContext) {
    try {
      await navigator.clipboard.writeText(text);
      return true;
    } catch {
      // denied: fall back to the selection
    }
  }
  selectContents(element);
  try {
    return document.execCommand("copy");
  } catch {
    return false;
  }
}

function announce(button, text) {
  const status = button.closest("dialog, section, main")?.querySelector("[data-copy-status]");
  if (status) status.textContent = text;
}

/** Wire every copy button under `root` (once each). */
export function enableCopyButtons(root = document) {
  for (const button of root.querySelectorAll("button[data-copy]")) {
    if (button.dataset.copyReady) continue;
    button.dataset.copyReady = "1";
    const label = button.textContent;
    let timer = null;
    button.addEventListener("click", async () => {
      const target = document.getElementById(button.dataset.copy);
      if (!target) return;
      const name = button.dataset.copyName || "it";
      const copied = await copyText(target);
      if (!copied) selectContents(target);
      button.textContent = copied ? "Copied" : "Press Ctrl+C";
      announce(button, copied ? `Copied ${name}.` : `Selected ${name}: press Ctrl+C (⌘C on a Mac) to copy.`);
      clearTimeout(timer);
      timer = setTimeout(() => {
        button.textContent = label;
      }, RESET_MS);
    });
  }
}

enableCopyButtons();
