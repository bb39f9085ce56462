// The browser half of ChatInput (chat_input.py). ipywidgets' Textarea cannot tell Enter
// from Shift+Enter (it has no key events), so this tiny module does: Enter (or the Send
// button) hands the text to Python in one "submit" message and empties the box at once,
// Shift+Enter keeps the textarea's own new line. The box stays editable while a reply is
// pending (only sending waits), and the text is not synced on every keystroke, so nothing
// Python sets later (the clearing after a send, a text given back after a failure) can
// wipe what was typed in the meantime. Python asks for the cursor with a "focus" message.
// While a reply streams in ("streaming"), a Stop button shows and Esc does the same: a
// "stop" message. A "copy" message puts its text on the clipboard; "copied" answers.

// The text boxes of each widget (a notebook may show the same one twice), by the widget's
// key (each view gets its own proxy of the model, so the proxy cannot be the key), and the
// widgets whose focus request came before any view of them was on the page.
const views = new Map();
const focusPending = new Set();

function boxesOf(model) {
  const key = model.get("_key");
  if (!views.has(key)) views.set(key, new Set());
  return views.get(key);
}

function onScreen(node) {
  const rect = node.getBoundingClientRect();
  return node.isConnected && rect.bottom > 0 && rect.top < window.innerHeight;
}

function focusBox(model, tries = 40) {
  const shown = [...boxesOf(model)].filter((box) => box.isConnected);
  if (!shown.length) {
    // Not drawn yet (the chat panel is being shown): try again on the next frames.
    if (tries > 0) requestAnimationFrame(() => focusBox(model, tries - 1));
    else focusPending.add(model.get("_key"));
    return;
  }
  focusPending.delete(model.get("_key"));
  const visible = shown.filter(onScreen);
  const box = (visible.length ? visible : shown).at(-1);
  box.focus({ preventScroll: visible.length > 0 });
}

function copyText(model, text) {
  // The click that asked for it was a moment ago, so the browser still counts it as the
  // person's own action (clipboard writes need one).
  const answer = (ok) => model.send({ type: "copied", ok });
  if (!navigator.clipboard) return answer(false);
  navigator.clipboard.writeText(text).then(() => answer(true), () => answer(false));
}

function initialize({ model }) {
  const onMessage = (msg) => {
    if (msg && msg.type === "focus") focusBox(model);
    if (msg && msg.type === "copy" && typeof msg.text === "string") copyText(model, msg.text);
  };
  model.on("msg:custom", onMessage);
  return () => model.off("msg:custom", onMessage);
}

function render({ model, el }) {
  const row = document.createElement("div");
  Object.assign(row.style, { display: "flex", gap: "6px", alignItems: "flex-end", width: "100%" });
  const box = document.createElement("textarea");
  box.className = "securechat-input";
  box.rows = 3;
  box.setAttribute("aria-label", "Message");
  box.setAttribute("aria-keyshortcuts", "Enter Shift+Enter Escape");
  Object.assign(box.style, {
    flex: "1 1 auto", boxSizing: "border-box", resize: "vertical", font: "inherit",
    padding: "6px 8px", borderRadius: "6px",
    border: "1px solid var(--jp-border-color1, #999)",
    background: "var(--jp-layout-color0, #fff)", color: "var(--jp-ui-font-color0, #111)",
  });
  const send = document.createElement("button");
  send.type = "button";
  send.className = "jupyter-widgets jupyter-button widget-button mod-primary securechat-send";
  send.textContent = "Send";
  const stop = document.createElement("button");
  stop.type = "button";
  stop.className = "jupyter-widgets jupyter-button widget-button mod-warning securechat-stop";
  stop.textContent = "Stop";
  stop.title = "Stop generating (Esc); what arrived is kept";
  stop.setAttribute("aria-label", "Stop generating");
  // What the box held when it last agreed with Python's value; anything else in it was
  // typed since, and belongs to the person.
  let synced = "";
  const submit = () => {
    // While a reply is pending, Enter and Send wait; the text stays in the box.
    if (model.get("disabled") || !box.value.trim()) return;
    const text = box.value;
    box.value = synced = "";
    model.send({ type: "submit", text });
  };
  const onValue = () => {
    const value = model.get("value");
    if (box.value === synced || box.value === "") {
      box.value = value;
    } else if (value) {
      // A text given back (it was not sent) goes first; what was typed since stays after it.
      box.value = value + "\n" + box.value;
    } // else: Python cleared the box, but newer typing is kept.
    synced = box.value;
  };
  const onState = () => {
    box.placeholder = model.get("placeholder");
    send.disabled = model.get("disabled");
    // Not the hidden attribute: the button classes of Jupyter set a display of their own.
    stop.style.display = model.get("streaming") ? "" : "none";
  };
  const askStop = () => {
    if (model.get("streaming")) model.send({ type: "stop" });
  };
  const onKeydown = (event) => {
    // Keep JupyterLab's shortcuts (Shift+Enter runs a cell, A/B/D add or delete
    // cells) away from what the person types here.
    event.stopPropagation();
    if (event.key === "Escape") {
      // Esc stops a reply on its way (and does nothing else here).
      event.preventDefault();
      askStop();
      return;
    }
    const plainEnter = event.key === "Enter" && !event.shiftKey && !event.altKey &&
      !event.ctrlKey && !event.metaKey && !event.isComposing;
    if (!plainEnter) return;
    event.preventDefault();
    submit();
  };
  onValue();
  onState();
  box.addEventListener("keydown", onKeydown);
  send.addEventListener("click", submit);
  stop.addEventListener("click", askStop);
  model.on("change:value", onValue);
  model.on("change:disabled change:placeholder change:streaming", onState);
  row.append(box, send, stop);
  el.appendChild(row);
  boxesOf(model).add(box);
  if (focusPending.has(model.get("_key"))) focusBox(model);
  return () => {
    boxesOf(model).delete(box);
    model.off("change:value", onValue);
    model.off("change:disabled change:placeholder change:streaming", onState);
    box.removeEventListener("keydown", onKeydown);
    send.removeEventListener("click", submit);
    stop.removeEventListener("click", askStop);
  };
}
export default { initialize, render };
