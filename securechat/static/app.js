// The securechat page. Text from people and from the AI is only ever inserted with
// textContent (never parsed as markup), and this file is loaded from the same origin, so
// the app's CSP (script-src 'self', no inline script) stays strict.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const CSRF_HEADER = "X-CSRF-Token";
  const PAGE = 200;
  const state = { csrf: null, username: null, conversations: [], current: null, busy: false };

  class ApiError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // --- talking to the JSON API ---------------------------------------------------

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.csrf) headers[CSRF_HEADER] = state.csrf;
    let response;
    try {
      response = await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store",
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      throw new ApiError(0, "unreachable", "Cannot reach the server. Check that it is " +
        "running and your connection works, then try again.");
    }
    if (response.status === 204) return null;
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (!response.ok) {
      const error = (data && data.error) || {};
      throw new ApiError(response.status, String(error.code || "error"),
        String(error.message || response.statusText || "The request failed."));
    }
    if (data === null) throw new ApiError(response.status, "bad_response", "The server did not answer JSON.");
    return data;
  }

  const conversationPath = (id) => "/api/conversations/" + encodeURIComponent(id);

  async function fullHistory(id) {
    // Pages come newest first; each page is oldest to newest within itself.
    const pages = [];
    let before = null;
    do {
      const query = "?limit=" + PAGE + (before === null ? "" : "&before=" + encodeURIComponent(before));
      const page = await api("GET", conversationPath(id) + "/messages" + query);
      pages.unshift(page.messages);
      before = page.next_before;
    } while (before !== null && before !== undefined);
    return pages.flat();
  }

  // --- showing things --------------------------------------------------------------

  function describe(error) {
    if (!(error instanceof ApiError)) return "Something went wrong on this page; reload it and try again.";
    if (error.status === 0) return error.message;
    if (error.status === 429) return error.message + " Wait a moment, then try again.";
    if (error.status >= 500) {
      return "The server could not answer: " + error.message + " (HTTP " + error.status + "). Try again.";
    }
    return error.message;
  }

  function notify(text, isError = true) {
    const notice = $("notice");
    notice.textContent = text || "";
    notice.hidden = !text;
    notice.classList.toggle("error", Boolean(text) && isError);
  }

  function setBusy(busy, thinking) {
    state.busy = busy;
    for (const el of document.querySelectorAll("#chat button, #chat textarea, #auth button, #logout")) {
      el.disabled = busy;
    }
    if (!busy) $("delete-conversation").disabled = state.current === null;
    $("thinking").hidden = !thinking;
  }

  function showAuth() {
    state.csrf = state.username = state.current = null;
    state.conversations = [];
    $("chat").hidden = true;
    $("account").hidden = true;
    $("auth").hidden = false;
    $("messages").replaceChildren();
    $("conversation-list").replaceChildren();
    $("username").focus();
  }

  function showChat() {
    $("who").textContent = state.username;
    $("auth").hidden = true;
    $("account").hidden = false;
    $("chat").hidden = false;
    $("password").value = "";
  }

  function renderConversations() {
    const items = state.conversations.map((conversation) => {
      const item = document.createElement("li");
      const button = document.createElement("button");
      button.type = "button";
      button.className = "conversation";
      button.textContent = conversation.title;
      button.title = conversation.title;
      button.dataset.id = conversation.id;
      if (conversation.id === state.current) button.setAttribute("aria-current", "true");
      item.append(button);
      return item;
    });
    $("conversation-list").replaceChildren(...items);
    const current = state.conversations.find((c) => c.id === state.current);
    $("thread-title").textContent = current ? current.title : "New conversation";
    $("delete-conversation").disabled = state.busy || !current;
  }

  function messageItem(message) {
    const item = document.createElement("li");
    item.className = "message " + (message.role === "user" ? "user" : "assistant");
    const who = document.createElement("span");
    who.className = "who";
    who.textContent = message.role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    body.textContent = message.content;
    item.append(who, body);
    return item;
  }

  function appendMessage(message) {
    const list = $("messages");
    const item = messageItem(message);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    return item;
  }

  function showMessages(messages) {
    $("messages").replaceChildren(...messages.map(messageItem));
    $("messages").scrollTop = $("messages").scrollHeight;
  }

  // --- actions ---------------------------------------------------------------------

  async function run(action, thinking = false) {
    if (state.busy) return undefined;
    setBusy(true, thinking);
    notify("");
    try {
      return await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && state.username) {
        showAuth();
        notify("Your session expired or was closed; log in again.");
      } else {
        notify(describe(error));
      }
      return undefined;
    } finally {
      setBusy(false, false);
    }
  }

  async function loadConversations(select) {
    state.conversations = (await api("GET", "/api/conversations")).conversations;
    const ids = state.conversations.map((c) => c.id);
    state.current = ids.includes(select) ? select : (ids[0] || null);
    renderConversations();
    showMessages(state.current ? await fullHistory(state.current) : []);
  }

  async function enter(session) {
    state.csrf = session.csrf_token;
    state.username = session.username;
    showChat();
    await loadConversations(null);
    $("input").focus();
  }

  async function onAuthSubmit(event) {
    event.preventDefault();
    const mode = event.submitter && event.submitter.value === "register" ? "register" : "login";
    const credentials = { username: $("username").value.trim(), password: $("password").value };
    await run(async () => {
      if (mode === "register") await api("POST", "/api/register", credentials);
      await enter(await api("POST", "/api/login", credentials));
    });
    $("password").value = "";
  }

  async function onSend(event) {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    if (!text.trim()) return;
    await run(async () => {
      const pending = appendMessage({ role: "user", content: text });
      input.value = "";
      try {
        if (state.current === null) {
          const title = text.trim().split("\n")[0].slice(0, 60);
          const conversation = await api("POST", "/api/conversations", { title });
          state.conversations.unshift(conversation);
          state.current = conversation.id;
          renderConversations();
        }
        const result = await api("POST", conversationPath(state.current) + "/messages", { content: text });
        appendMessage(result.reply);
      } catch (error) {
        // 5xx: the server stored the message before its backend failed; otherwise it did
        // not. Either way the text goes back into the box, ready to send again.
        if (!(error instanceof ApiError && error.status >= 500)) pending.remove();
        input.value = text;
        throw error;
      }
    }, true);
    input.focus();
  }

  function onKeydown(event) {
    // Enter sends; Shift+Enter keeps the textarea's own new line.
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey ||
        event.metaKey || event.isComposing) return;
    event.preventDefault();
    $("composer").requestSubmit();
  }

  async function onPick(event) {
    const button = event.target.closest("button.conversation");
    if (!button || button.dataset.id === state.current) return;
    await run(async () => {
      const messages = await fullHistory(button.dataset.id);
      state.current = button.dataset.id;
      renderConversations();
      showMessages(messages);
    });
  }

  function onNew() {
    state.current = null;
    renderConversations();
    showMessages([]);
    notify("");
    $("input").focus();
  }

  async function onDelete() {
    if (state.current === null) return;
    if (!window.confirm("Delete this conversation and all its messages?")) return;
    await run(async () => {
      await api("DELETE", conversationPath(state.current));
      await loadConversations(null);
    });
  }

  async function onLogout() {
    await run(async () => {
      await api("POST", "/api/logout", {});
      showAuth();
    });
    if (!state.username) notify("Logged out.", false);
  }

  async function start() {
    $("auth-form").addEventListener("submit", onAuthSubmit);
    $("composer").addEventListener("submit", onSend);
    $("input").addEventListener("keydown", onKeydown);
    $("conversation-list").addEventListener("click", onPick);
    $("new-conversation").addEventListener("click", onNew);
    $("delete-conversation").addEventListener("click", onDelete);
    $("logout").addEventListener("click", onLogout);
    // A reload keeps the session (HttpOnly cookie); ask the server who we are and for the
    // CSRF token, which the page cannot read from the cookie.
    try {
      await enter(await api("GET", "/api/session"));
    } catch (error) {
      showAuth();
      if (!(error instanceof ApiError && error.status === 401)) notify(describe(error));
    }
  }

  start();
})();
