// The securechat page. Text from people and from the AI is never parsed as markup: a
// person's message is inserted with textContent, a reply is built as DOM nodes by
// markdown.js (a safe Markdown subset), and both files are loaded from the same origin as
// modules, so the app's CSP (script-src 'self', no inline script) stays strict.
// Nothing is kept in localStorage or sessionStorage: not the CSRF token, not a recovery
// code, not a temporary chat.
import { renderMarkdown } from "./markdown.js";

(() => {
  const $ = (id) => document.getElementById(id);
  const CSRF_HEADER = "X-CSRF-Token";
  const PAGE = 200; // messages per history request
  const LIST_PAGE = 50; // conversations per "Load more"
  const EVENTS_PAGE = 20;
  const SEARCH_PAGE = 20;
  // The server's default HISTORY_WINDOW: a temporary chat sends at most this many turns.
  const GHOST_WINDOW = 20;
  const EVENT_STREAM = "text/event-stream";
  // The status the JSON route would have answered for a backend failure in a stream.
  const STREAM_STATUS = { backend_bad_response: 502, backend_unavailable: 503, backend_timeout: 504 };
  // Only these codes end a session; a wrong password on an account route is a 401 too,
  // but the session stays (DESIGN.md: act on the code, not on the status).
  const SESSION_OVER = ["unauthorized", "session_expired"];
  const state = {
    csrf: null, username: null, conversations: [], nextBefore: null, current: null,
    busy: false, offerRetry: false, controller: null, editing: false,
    ghost: false, ghostHistory: [], search: null, eventsBefore: null,
  };

  class ApiError extends Error {
    constructor(status, code, message, retryAfter = null) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter; // seconds the server asked us to wait, or null
    }
  }

  // Retry-After is a number of seconds or an HTTP date; null when absent or unreadable.
  function retryAfter(response) {
    const value = (response.headers.get("Retry-After") || "").trim();
    if (/^\d+$/.test(value)) return Number(value);
    const date = Date.parse(value);
    return Number.isNaN(date) ? null : Math.max(0, (date - Date.now()) / 1000);
  }

  // --- talking to the JSON API ---------------------------------------------------

  async function request(method, path, body, accept, signal) {
    const headers = { Accept: accept };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    if (state.csrf) headers[CSRF_HEADER] = state.csrf;
    try {
      return await fetch(path, {
        method, headers, credentials: "same-origin", cache: "no-store", signal,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (_) {
      if (signal && signal.aborted) throw stoppedError("");
      throw new ApiError(0, "unreachable", "Cannot reach the server. Check that it is " +
        "running and your connection works, then try again.");
    }
  }

  async function api(method, path, body) {
    return decoded(await request(method, path, body, "application/json"));
  }

  async function failure(response) {
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    const error = (data && data.error) || {};
    return new ApiError(response.status, String(error.code || "error"),
      String(error.message || response.statusText || "The request failed."),
      // Flask-Limiter sends Retry-After on every limited route; it means "wait" only here.
      response.status === 429 || response.status === 503 ? retryAfter(response) : null);
  }

  async function decoded(response) {
    if (response.status === 204) return null;
    if (!response.ok) throw await failure(response);
    let data = null;
    try {
      data = await response.json();
    } catch (_) {
      data = null;
    }
    if (data === null) throw new ApiError(response.status, "bad_response", "The server did not answer JSON.");
    return data;
  }

  function brokenStream(text) {
    const error = new ApiError(0, "stream_broken", "The connection broke before the reply was complete.");
    error.partial = text;
    return error;
  }

  function stoppedError(text) {
    const error = new ApiError(0, "stopped", "Stopped.");
    error.partial = text;
    error.stopped = true;
    return error;
  }

  // Send with Accept: text/event-stream and call onText(textSoFar) as the reply arrives.
  // Returns the finished reply; an error thrown once the stream began has .delivered set
  // (the server stored the message) and .partial (what arrived, stored marked incomplete).
  // Aborting `signal` (Stop) ends the stream: the error then has .stopped set.
  async function streamed(method, path, body, onText, signal) {
    const response = await request(method, path, body, EVENT_STREAM, signal);
    if (!(response.headers.get("Content-Type") || "").startsWith(EVENT_STREAM)) {
      if (!response.ok) throw await failure(response);
      throw new ApiError(response.status, "bad_response", "The server did not answer with a stream.");
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    let text = "";
    try {
      for (;;) {
        let chunk;
        try {
          chunk = await reader.read();
        } catch (_) {
          throw signal && signal.aborted ? stoppedError(text) : brokenStream(text);
        }
        if (chunk.done) throw brokenStream(text);
        buffer += decoder.decode(chunk.value, { stream: true }).replace(/\r\n/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let name = "message";
          const data = [];
          for (const line of block.split("\n")) {
            if (line.startsWith("event:")) name = line.slice(6).trim();
            else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
          }
          if (!data.length) continue;
          const payload = JSON.parse(data.join("\n"));
          if (name === "delta") {
            text += payload.content;
            onText(text);
          } else if (name === "done") {
            return payload;
          } else if (name === "error") {
            const error = payload.error || {};
            const failed = new ApiError(STREAM_STATUS[error.code] || 502, String(error.code || "error"),
              String(error.message || "The reply failed."));
            failed.partial = text;
            throw failed;
          }
        }
      }
    } catch (error) {
      const failed = error instanceof ApiError ? error : brokenStream(text);
      failed.delivered = true;
      throw failed;
    } finally {
      reader.cancel().catch(() => {});
    }
  }

  const conversationPath = (id) => "/api/conversations/" + encodeURIComponent(id);
  const withBefore = (path, limit, before) => path + "?limit=" + limit +
    (before === null || before === undefined ? "" : "&before=" + encodeURIComponent(before));

  async function fullHistory(id) {
    // Pages come newest first; each page is oldest to newest within itself.
    const pages = [];
    let before = null;
    do {
      const page = await api("GET", withBefore(conversationPath(id) + "/messages", PAGE, before));
      pages.unshift(page.messages);
      before = page.next_before;
    } while (before !== null && before !== undefined);
    return pages.flat();
  }

  // The id of the conversation's last user message, read fresh from the server (a reply
  // streamed in this page does not carry the id of the message it answers).
  async function lastUserMessageId(id) {
    let before = null;
    do {
      const page = await api("GET", withBefore(conversationPath(id) + "/messages", 20, before));
      const mine = page.messages.filter((m) => m.role === "user");
      if (mine.length) return mine[mine.length - 1].id;
      before = page.next_before;
    } while (before !== null && before !== undefined);
    throw new ApiError(409, "not_last_user_message", "There is no message of yours to edit.");
  }

  // --- showing things --------------------------------------------------------------

  // "42 seconds", "1 second", "3 minutes": how long the server asked us to wait.
  function waitTime(seconds) {
    const whole = Math.max(1, Math.ceil(seconds));
    if (whole < 120) return whole === 1 ? "1 second" : whole + " seconds";
    return Math.ceil(whole / 60) + " minutes";
  }

  function describe(error) {
    if (!(error instanceof ApiError)) return "Something went wrong on this page; reload it and try again.";
    const again = error.retryAfter === null ? "Try again." : "Try again in " + waitTime(error.retryAfter) + ".";
    if (error.status === 0) return error.message;
    if (error.status === 429) {
      return error.message + (error.retryAfter === null ? " Wait a moment, then try again." : " " + again);
    }
    if (error.status >= 500) {
      return "The server could not answer: " + error.message + " (HTTP " + error.status + "). " + again;
    }
    return error.message;
  }

  // Errors go to the alert region; calm news to the status region (read out politely).
  function notify(text, isError = true) {
    const notice = $("notice");
    const status = $("status");
    notice.textContent = isError ? text || "" : "";
    notice.hidden = !(isError && text);
    notice.classList.add("error");
    status.textContent = isError ? "" : text || "";
    status.hidden = isError || !text;
  }

  const when = (iso) => {
    const date = new Date(iso);
    return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleString();
  };

  function element(tag, className, text) {
    const el = document.createElement(tag);
    if (className) el.className = className;
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function button(label, className, data = {}) {
    const el = element("button", className, label);
    el.type = "button";
    Object.assign(el.dataset, data);
    return el;
  }

  function setBusy(busy, thinking) {
    state.busy = busy;
    // The message box stays enabled: what the person types while a reply is on its way is
    // kept (only sending waits, see onSend and onKeydown). Stop stays usable.
    for (const el of document.querySelectorAll(
      "#chat button, #auth button, #logout, #account-panel button, #account-toggle")) {
      if (el.id !== "stop") el.disabled = busy;
    }
    $("ghost-toggle").disabled = busy;
    $("messages").setAttribute("aria-busy", String(busy && thinking));
    if (!busy) renderThreadHead();
    $("thinking").hidden = !thinking;
    $("retry").hidden = busy || !state.offerRetry;
    $("stop").hidden = !(busy && thinking);
    $("send").hidden = busy && thinking;
  }

  function showAuth() {
    state.csrf = state.username = state.current = state.search = null;
    state.conversations = [];
    state.ghostHistory = [];
    state.ghost = state.editing = false;
    $("ghost-toggle").checked = false;
    $("chat").hidden = true;
    $("account").hidden = true;
    closeAccount();
    $("auth").hidden = false;
    for (const id of ["messages", "conversation-list", "search-results", "session-list", "event-list"]) {
      $(id).replaceChildren();
    }
    for (const form of document.querySelectorAll("#account-panel form")) form.reset();
    $("search-area").hidden = true;
    $("ghost-note").hidden = true;
    $("editing").hidden = true;
    showRename(false);
    $("input").value = "";
    $("username").focus();
  }

  function showChat() {
    $("who").textContent = state.username;
    $("password-form-user").value = state.username;
    $("auth").hidden = true;
    $("account").hidden = false;
    $("chat").hidden = false;
    $("password").value = "";
    showRecover(false);
  }

  function renderConversations() {
    const items = state.conversations.map((conversation) => {
      const item = document.createElement("li");
      const pick = button(conversation.title, "conversation", { id: conversation.id });
      pick.title = conversation.title;
      if (conversation.id === state.current && !state.ghost) pick.setAttribute("aria-current", "true");
      item.append(pick);
      if (conversation.starred) {
        // Outside the button, so its name stays the title; said aloud as "starred".
        const mark = element("span", "starred-mark", "★");
        mark.setAttribute("role", "img");
        mark.setAttribute("aria-label", "starred");
        item.append(mark);
        item.classList.add("starred");
      }
      return item;
    });
    $("conversation-list").replaceChildren(...items);
    $("conversations-more").hidden = state.nextBefore === null || state.nextBefore === undefined;
    renderThreadHead();
  }

  function currentConversation() {
    return state.ghost ? undefined : state.conversations.find((c) => c.id === state.current);
  }

  function renderThreadHead() {
    const current = currentConversation();
    const title = state.ghost ? "Temporary chat" : current ? current.title : "New conversation";
    $("thread-title").textContent = title;
    const has = !state.ghost && state.current !== null;
    for (const id of ["star", "rename", "delete-conversation"]) {
      $(id).disabled = state.busy || !has;
      $(id).hidden = state.ghost;
    }
    const starred = Boolean(current && current.starred);
    $("star").setAttribute("aria-pressed", String(starred));
    $("star").textContent = starred ? "★ Starred" : "☆ Star";
    $("ghost-note").hidden = !state.ghost;
  }

  // Starred first, then by latest activity (as the server pages them); ties keep their order.
  function sortConversations() {
    state.conversations.sort((a, b) => (Number(Boolean(b.starred)) - Number(Boolean(a.starred))) ||
      (a.updated_at < b.updated_at ? 1 : a.updated_at > b.updated_at ? -1 : 0));
  }

  function messageItem(message) {
    const item = document.createElement("li");
    item.className = "message " + (message.role === "user" ? "user" : "assistant");
    if (message.id) item.dataset.id = message.id;
    const who = element("span", "who", (message.role === "user" ? "You" : "Assistant") +
      (message.incomplete ? " · cut short" : ""));
    const body = document.createElement("div");
    if (message.role === "user") {
      body.className = "body text";
      body.textContent = message.content;
    } else {
      body.className = "body markdown";
      body.append(withCopyButtons(renderMarkdown(message.content)));
    }
    const actions = element("div", "actions");
    const copy = button("Copy", "message-copy");
    copy.setAttribute("aria-label", message.role === "user" ? "Copy your message" : "Copy the reply");
    actions.append(copy);
    if (message.role === "user") {
      const edit = button("Edit", "edit");
      edit.setAttribute("aria-label", "Edit and resend your last message");
      edit.hidden = true;
      actions.append(edit);
    } else {
      const again = button("Regenerate", "regenerate");
      again.setAttribute("aria-label", "Regenerate the last reply");
      again.hidden = true;
      actions.append(again);
    }
    item.append(who, body, actions);
    return item;
  }

  // Edit shows on the last message of yours; Regenerate on a reply that ends the thread.
  function refreshActions() {
    const items = [...$("messages").children];
    const last = items[items.length - 1];
    const mine = items.filter((li) => li.classList.contains("user"));
    for (const li of items) {
      const edit = li.querySelector("button.edit");
      const again = li.querySelector("button.regenerate");
      if (edit) edit.hidden = li !== mine[mine.length - 1];
      if (again) again.hidden = li !== last;
    }
  }

  // Each code block gets a Copy button (the click is handled once, on the list: onListClick).
  function withCopyButtons(fragment) {
    for (const pre of fragment.querySelectorAll("pre")) {
      const block = document.createElement("div");
      block.className = "code-block";
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy";
      pre.replaceWith(block);
      block.append(copy, pre);
    }
    return fragment;
  }

  function appendMessage(message) {
    const list = $("messages");
    const item = messageItem(message);
    list.append(item);
    list.scrollTop = list.scrollHeight;
    refreshActions();
    return item;
  }

  function replaceMessage(item, message) {
    const fresh = messageItem(message);
    item.replaceWith(fresh);
    $("messages").scrollTop = $("messages").scrollHeight;
    refreshActions();
    return fresh;
  }

  function showMessages(messages) {
    $("messages").replaceChildren(...messages.map(messageItem));
    $("messages").scrollTop = $("messages").scrollHeight;
    refreshActions();
  }

  // Remove `item` and every message after it.
  function removeFrom(item) {
    while (item.nextElementSibling) item.nextElementSibling.remove();
    item.remove();
    refreshActions();
  }

  // --- actions ---------------------------------------------------------------------

  async function run(action, thinking = false) {
    if (state.busy) return undefined;
    state.offerRetry = false;
    setBusy(true, thinking);
    notify("");
    try {
      return await action();
    } catch (error) {
      if (error instanceof ApiError && error.status === 401 && state.username &&
          SESSION_OVER.includes(error.code)) {
        showAuth();
        notify("Your session expired or was closed; log in again.");
      } else if (!(error instanceof ApiError && error.stopped)) {
        notify(describe(error));
      }
      return undefined;
    } finally {
      state.controller = null;
      setBusy(false, false);
    }
  }

  async function loadConversations(select) {
    const page = await api("GET", withBefore("/api/conversations", LIST_PAGE, null));
    state.conversations = page.conversations;
    state.nextBefore = page.next_before;
    const ids = state.conversations.map((c) => c.id);
    state.current = ids.includes(select) ? select : (ids[0] || null);
    renderConversations();
    showMessages(state.current ? await fullHistory(state.current) : []);
  }

  async function loadMoreConversations() {
    const page = await api("GET", withBefore("/api/conversations", LIST_PAGE, state.nextBefore));
    const known = new Set(state.conversations.map((c) => c.id));
    state.conversations.push(...page.conversations.filter((c) => !known.has(c.id)));
    state.nextBefore = page.next_before;
  }

  async function onMoreConversations() {
    await run(async () => {
      await loadMoreConversations();
      renderConversations();
    });
    // Keep the keyboard where it was: on the next page's first item, or the button.
    const more = $("conversations-more");
    if (more.hidden) $("conversation-list").lastElementChild?.querySelector("button")?.focus();
    else more.focus();
  }

  async function enter(session) {
    state.csrf = session.csrf_token;
    state.username = session.username;
    showChat();
    await loadConversations(null);
    $("input").focus();
  }

  // Show a recovery code once, in a modal dialog, until the person says it is written down.
  // It lives only in this dialog's text, which is emptied when it closes.
  function showCode(code) {
    const dialog = $("code-dialog");
    $("code-value").textContent = code;
    $("code-saved").checked = false;
    $("code-done").disabled = true;
    $("code-copy").textContent = "Copy";
    return new Promise((resolve) => {
      dialog.addEventListener("close", () => {
        $("code-value").textContent = "";
        resolve();
      }, { once: true });
      dialog.showModal();
      $("code-copy").focus();
    });
  }

  async function onCodeCopy() {
    const code = $("code-value").textContent;
    try {
      await navigator.clipboard.writeText(code);
      $("code-copy").textContent = "Copied";
    } catch (_) {
      window.getSelection().selectAllChildren($("code-value"));
      $("code-copy").textContent = "Selected: press Ctrl+C";
    }
  }

  async function onAuthSubmit(event) {
    event.preventDefault();
    const mode = event.submitter && event.submitter.value === "register" ? "register" : "login";
    const credentials = { username: $("username").value.trim(), password: $("password").value };
    let code = null;
    await run(async () => {
      if (mode === "register") code = (await api("POST", "/api/register", credentials)).recovery_code;
      await enter(await api("POST", "/api/login", credentials));
    });
    $("password").value = "";
    // Shown even if the login after it failed: the code exists now and is never shown again.
    if (code) {
      await showCode(code);
      (state.username ? $("input") : $("password")).focus();
    }
  }

  function showRecover(open) {
    $("recover-form").hidden = !open;
    $("forgot").setAttribute("aria-expanded", String(open));
    if (!open) $("recover-form").reset();
  }

  function onForgot() {
    const open = $("recover-form").hidden;
    showRecover(open);
    if (open) {
      $("recover-username").value = $("username").value.trim();
      ($("recover-username").value ? $("recover-code") : $("recover-username")).focus();
    }
  }

  async function onRecover(event) {
    event.preventDefault();
    const body = {
      username: $("recover-username").value.trim(),
      recovery_code: $("recover-code").value,
      new_password: $("recover-password").value,
    };
    let code = null;
    await run(async () => {
      const session = await api("POST", "/api/account/recover", body);
      code = session.recovery_code;
      await enter(session);
    });
    $("recover-password").value = "";
    if (code) {
      notify("Your password is set; every other session was logged out. Your old recovery " +
        "code no longer works: here is the new one.", false);
      await showCode(code);
      $("input").focus();
    }
  }

  // Whether the person's message stays after `error`: the server took it (stored first, or
  // a temporary chat's turn that only lacks its reply), as opposed to refused it.
  const kept = (error) => Boolean(error.delivered) || (error instanceof ApiError && error.status >= 500);

  // Ask for a reply and show it as it streams in. `userText`, when given, is shown first as
  // the person's message. Stop (or Esc) aborts: what arrived is kept, marked cut short.
  async function converse(method, path, body, userText, onReply) {
    const input = $("input");
    const pending = userText === null ? null : appendMessage({ role: "user", content: userText });
    let reply = null;
    // A redraw per animation frame at most, however many deltas arrive in between.
    let latest = null;
    let frame = 0;
    const draw = () => {
      frame = 0;
      reply = reply ? replaceMessage(reply, latest) : appendMessage(latest);
    };
    const settle = (message) => {
      cancelAnimationFrame(frame);
      frame = 0;
      reply = reply ? replaceMessage(reply, message) : appendMessage(message);
    };
    state.controller = new AbortController();
    try {
      const done = await streamed(method, path, body, (soFar) => {
        latest = { role: "assistant", content: soFar };
        $("thinking").hidden = true;
        if (!frame) frame = requestAnimationFrame(draw);
      }, state.controller.signal);
      settle(done);
      if (onReply) onReply(done);
    } catch (error) {
      cancelAnimationFrame(frame);
      frame = 0;
      if (kept(error)) {
        // The server stored the message before its backend failed (or we stopped it):
        // keep it, show what arrived (stored marked incomplete too), and offer to ask again.
        if (error.partial) {
          const cut = { role: "assistant", content: error.partial, incomplete: true };
          settle(cut);
          if (onReply) onReply(cut);
        } else if (reply) {
          reply.remove();
        }
        state.offerRetry = true;
        if (error.stopped) {
          notify(error.partial ? "Stopped. The reply so far is kept, marked cut short."
            : "Stopped before the reply began.", false);
        }
      } else {
        // Not stored: take it off the screen and put the text back, ready to send again,
        // ahead of anything typed since.
        if (pending) pending.remove();
        if (reply) reply.remove();
        refreshActions();
        if (userText !== null) input.value = input.value ? userText + "\n" + input.value : userText;
      }
      throw error;
    }
  }

  function ghostBody() {
    return { messages: state.ghostHistory.slice(-GHOST_WINDOW) };
  }

  function ghostKeep(reply) {
    if (reply.content && reply.content.trim()) {
      state.ghostHistory.push({ role: "assistant", content: reply.content });
    }
  }

  async function onSend(event) {
    event.preventDefault();
    const input = $("input");
    const text = input.value;
    // One message at a time; what is typed meanwhile stays in the box for later.
    if (state.busy || !text.trim()) return;
    const editing = state.editing;
    await run(async () => {
      if (state.ghost) {
        setEditing(false);
        input.value = "";
        if (editing) {
          const at = state.ghostHistory.map((m) => m.role).lastIndexOf("user");
          if (at >= 0) state.ghostHistory.splice(at);
          const mine = lastUserItem();
          if (mine) removeFrom(mine);
        }
        state.ghostHistory.push({ role: "user", content: text });
        try {
          await converse("POST", "/api/ghost", ghostBody(), text, ghostKeep);
        } catch (error) {
          if (!kept(error)) state.ghostHistory.pop();
          throw error;
        }
        return;
      }
      if (editing && state.current !== null) {
        // Until the server has the edit, the box keeps the text and the edit stays open.
        const id = await lastUserMessageId(state.current);
        const mine = lastUserItem();
        if (mine) removeFrom(mine);
        setEditing(false);
        input.value = "";
        const path = conversationPath(state.current) + "/messages/" + encodeURIComponent(id);
        try {
          await converse("PUT", path, { content: text }, text);
        } catch (error) {
          if (!kept(error)) {
            // Refused (e.g. a message arrived meanwhile): show what is stored, keep editing.
            setEditing(true);
            showMessages(await fullHistory(state.current));
          }
          throw error;
        }
        return;
      }
      setEditing(false);
      input.value = "";
      if (state.current === null) {
        const title = text.trim().split("\n")[0].slice(0, 60);
        try {
          const conversation = await api("POST", "/api/conversations", { title });
          state.conversations.unshift(conversation);
          state.current = conversation.id;
        } catch (error) {
          input.value = input.value ? text + "\n" + input.value : text;
          throw error;
        }
        sortConversations();
        renderConversations();
      }
      await converse("POST", conversationPath(state.current) + "/messages", { content: text }, text);
    }, true);
    input.focus();
  }

  function lastUserItem() {
    const mine = $("messages").querySelectorAll("li.message.user");
    return mine.length ? mine[mine.length - 1] : null;
  }

  async function onRetry() {
    if (state.ghost) {
      await run(() => converse("POST", "/api/ghost", ghostBody(), null, ghostKeep), true);
      return;
    }
    if (state.current === null) return;
    const id = state.current;
    await run(async () => {
      try {
        await api("POST", conversationPath(id) + "/reply", {});
      } catch (error) {
        if (error instanceof ApiError && (error.status === 0 || error.status >= 500)) {
          state.offerRetry = true;
        }
        // Answered meanwhile (a reply stopped here may have been finished by the server):
        // nothing to ask, only to show.
        if (!(error instanceof ApiError && error.code === "nothing_to_answer")) throw error;
      }
      // What the server holds now: the reply, and what a stopped stream left behind.
      if (state.current === id) showMessages(await fullHistory(id));
    }, true);
  }

  // Regenerating replaces every reply after your last message (as the server does).
  async function onRegenerate() {
    await run(async () => {
      const mine = lastUserItem();
      while (mine && mine.nextElementSibling) mine.nextElementSibling.remove();
      refreshActions();
      if (state.ghost) {
        while (state.ghostHistory.length &&
               state.ghostHistory[state.ghostHistory.length - 1].role === "assistant") {
          state.ghostHistory.pop();
        }
        await converse("POST", "/api/ghost", ghostBody(), null, ghostKeep);
        return;
      }
      try {
        await converse("POST", conversationPath(state.current) + "/reply", { regenerate: true }, null);
      } catch (error) {
        // The old reply stays on the server when no new one came: show what is stored.
        if (!kept(error)) showMessages(await fullHistory(state.current));
        throw error;
      }
    }, true);
    $("input").focus();
  }

  function setEditing(on) {
    state.editing = on;
    $("editing").hidden = !on;
  }

  function onEdit(item) {
    if (state.busy) return;
    const input = $("input");
    input.value = item.querySelector(".body").textContent;
    setEditing(true);
    input.focus();
    input.setSelectionRange(input.value.length, input.value.length);
  }

  function onEditCancel() {
    setEditing(false);
    $("input").value = "";
    $("input").focus();
  }

  function onStop() {
    if (state.controller) state.controller.abort();
  }

  function onKeydown(event) {
    // Enter sends (not while a reply is on its way); Shift+Enter keeps the textarea's own
    // new line.
    if (event.key !== "Enter" || event.shiftKey || event.altKey || event.ctrlKey ||
        event.metaKey || event.isComposing) return;
    event.preventDefault();
    if (!state.busy) $("composer").requestSubmit();
  }

  function onDocumentKeydown(event) {
    // Esc stops a reply on its way, wherever the focus is (a dialog's Esc is its own).
    if (event.key === "Escape" && state.controller && !$("code-dialog").open) {
      event.preventDefault();
      onStop();
    } else if (event.key === "Escape" && state.editing && event.target === $("input")) {
      onEditCancel();
    } else if (event.key === "Escape" && !$("account-panel").hidden &&
               $("account-panel").contains(event.target)) {
      // Esc leaves the account panel, back to the button that opened it.
      closeAccount();
      $("account-toggle").focus();
    }
  }

  const copyTimers = new WeakMap(); // button -> the timer that puts its label back

  async function copyText(button, text, selectable) {
    let label = "Copied";
    try {
      await navigator.clipboard.writeText(text);
    } catch (_) {
      // No clipboard access (e.g. plain http on another host): select the text instead.
      window.getSelection().selectAllChildren(selectable);
      label = "Selected: press Ctrl+C";
    }
    const original = button.textContent === "Copied" ? "Copy" : button.textContent;
    button.textContent = label;
    clearTimeout(copyTimers.get(button));
    copyTimers.set(button, setTimeout(() => { button.textContent = original; }, 2000));
  }

  async function onListClick(event) {
    const target = event.target.closest("button");
    if (!target) return;
    const item = target.closest("li.message");
    if (target.classList.contains("copy")) {
      const pre = target.parentElement.querySelector("pre");
      if (pre) await copyText(target, pre.textContent, pre);
    } else if (target.classList.contains("message-copy")) {
      const body = item.querySelector(".body");
      // A person's message as typed; a reply as the text it shows (its Markdown rendered).
      await copyText(target, item.classList.contains("user") ? body.textContent : body.innerText, body);
    } else if (target.classList.contains("edit")) {
      onEdit(item);
    } else if (target.classList.contains("regenerate")) {
      await onRegenerate();
    }
  }

  async function openConversation(id) {
    const messages = await fullHistory(id);
    // A search hit may be in a page of the list not loaded yet: load pages up to it, so it
    // can be renamed, starred and deleted like any other.
    while (!state.conversations.some((c) => c.id === id) && state.nextBefore) {
      await loadMoreConversations();
    }
    setGhost(false);
    state.current = id;
    renderConversations();
    showMessages(messages);
  }

  // Leaving a temporary chat drops it for good: ask first (true: go ahead).
  function mayLeaveGhost() {
    return !state.ghost || !state.ghostHistory.length ||
      window.confirm("Leave the temporary chat? It is not saved anywhere.");
  }

  async function onPick(event) {
    const pick = event.target.closest("button.conversation");
    if (!pick || (pick.dataset.id === state.current && !state.ghost)) return;
    if (!mayLeaveGhost()) return;
    await run(() => openConversation(pick.dataset.id));
    if (state.username) $("input").focus();
  }

  function onNew() {
    if (!mayLeaveGhost()) return;
    setGhost(false);
    state.current = null;
    setEditing(false);
    renderConversations();
    showMessages([]);
    notify("");
    $("input").focus();
  }

  // A temporary chat: its history is held in this page only and sent with each request.
  function setGhost(on) {
    if (state.ghost === on) return;
    state.ghost = on;
    state.ghostHistory = [];
    $("ghost-toggle").checked = on;
    setEditing(false);
  }

  function onGhostToggle() {
    const on = $("ghost-toggle").checked;
    if (!on && !mayLeaveGhost()) {
      $("ghost-toggle").checked = true;
      return;
    }
    setGhost(on);
    if (on) {
      state.current = null;
      showMessages([]);
    } else {
      state.current = state.conversations.length ? state.conversations[0].id : null;
      if (state.current) run(() => openConversation(state.current));
      else showMessages([]);
    }
    renderConversations();
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

  async function onStar() {
    const current = currentConversation();
    if (!current) return;
    await run(async () => {
      const updated = await api("PATCH", conversationPath(current.id), { starred: !current.starred });
      Object.assign(current, updated);
      sortConversations();
      renderConversations();
    });
    $("star").focus();
  }

  function showRename(open) {
    $("rename-form").hidden = !open;
    $("thread-title").hidden = open;
    $("rename").setAttribute("aria-expanded", String(open));
    if (open) {
      const current = currentConversation();
      $("rename-input").value = current ? current.title : "";
      $("rename-input").focus();
      $("rename-input").select();
    }
  }

  async function onRename(event) {
    event.preventDefault();
    const current = currentConversation();
    const title = $("rename-input").value.trim();
    if (!current || !title) return;
    await run(async () => {
      Object.assign(current, await api("PATCH", conversationPath(current.id), { title }));
      showRename(false);
      renderConversations();
    });
    if (!$("rename-form").hidden) $("rename-input").focus();
    else $("rename").focus();
  }

  function onRenameKeydown(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      showRename(false);
      $("rename").focus();
    }
  }

  async function onLogout() {
    await run(async () => {
      await api("POST", "/api/logout", {});
      showAuth();
    });
    if (!state.username) notify("Logged out.", false);
  }

  // --- search ------------------------------------------------------------------------

  function searchHit(result) {
    const item = document.createElement("li");
    const hit = button("", "search-hit", {
      conversation: result.conversation_id, message: result.message_id || "",
    });
    const title = element("span", "hit-title", result.title);
    const snippet = element("span", "hit-snippet");
    const text = String(result.snippet || "");
    const [start, end] = Array.isArray(result.match) ? result.match : [0, 0];
    if (end > start) {
      snippet.append(text.slice(0, start), element("mark", "", text.slice(start, end)), text.slice(end));
    } else {
      snippet.textContent = text;
    }
    // Whose words matched: yours, the assistant's, or the title.
    const whose = result.role === "user" ? "You" : result.role === "assistant" ? "Assistant" : "Title";
    snippet.prepend(element("span", "hit-role", whose + " · "));
    hit.append(title, snippet);
    item.append(hit);
    return item;
  }

  async function searchPage(before) {
    const body = { q: state.search.q, limit: SEARCH_PAGE };
    if (before) body.before = before;
    const page = await api("POST", "/api/search", body);
    state.search.next = page.next_before;
    $("search-results").append(...page.results.map(searchHit));
    if (!page.results.length && !before) {
      $("search-results").append(element("li", "empty", "Nothing found."));
    }
    $("search-more").hidden = !page.next_before;
  }

  async function onSearch(event) {
    event.preventDefault();
    const q = $("search-input").value.trim();
    if (!q) return;
    await run(async () => {
      state.search = { q, next: null };
      $("search-results").replaceChildren();
      $("search-area").hidden = false;
      await searchPage(null);
    });
    const first = $("search-results").querySelector("button");
    if (first) first.focus();
  }

  async function onSearchMore() {
    if (!state.search) return;
    await run(() => searchPage(state.search.next));
    $("search-more").focus();
  }

  function onSearchClear() {
    state.search = null;
    $("search-results").replaceChildren();
    $("search-area").hidden = true;
    $("search-input").value = "";
    $("search-input").focus();
  }

  async function onSearchPick(event) {
    const hit = event.target.closest("button.search-hit");
    if (!hit || !mayLeaveGhost()) return;
    await run(() => openConversation(hit.dataset.conversation));
    const id = hit.dataset.message;
    const found = id ? [...$("messages").children].find((li) => li.dataset.id === id) : null;
    for (const old of $("messages").querySelectorAll(".found")) old.classList.remove("found");
    if (found) {
      found.classList.add("found");
      found.tabIndex = -1;
      found.scrollIntoView({ block: "center" });
      found.focus();
    } else if (state.current === hit.dataset.conversation) {
      $("input").focus();
    }
  }

  // --- the account panel -----------------------------------------------------------

  function openAccount() {
    $("account-panel").hidden = false;
    $("account-toggle").setAttribute("aria-expanded", "true");
    document.body.classList.add("panel-open");
    run(refreshAccount);
    $("account-title").tabIndex = -1;
    $("account-title").focus();
  }

  function closeAccount() {
    $("account-panel").hidden = true;
    $("account-toggle").setAttribute("aria-expanded", "false");
    document.body.classList.remove("panel-open");
  }

  function onAccountToggle() {
    if ($("account-panel").hidden) {
      openAccount();
    } else {
      closeAccount();
      $("account-toggle").focus();
    }
  }

  async function refreshAccount() {
    await Promise.all([loadSessions(), loadSettings(), loadEvents(true)]);
  }

  async function loadSessions() {
    const { sessions } = await api("GET", "/api/account/sessions");
    $("session-list").replaceChildren(...sessions.map((s) => {
      const item = element("li", "session" + (s.current ? " current" : ""));
      const what = element("span", "session-label", (s.label || "Unknown browser") +
        (s.address ? " · " + s.address : ""));
      const times = element("span", "session-times",
        "Logged in " + when(s.created_at) + " · last seen " + when(s.last_seen));
      item.append(what, times);
      if (s.current) {
        item.append(element("strong", "this-session", "This session"));
      } else {
        const revoke = button("Log out", "revoke secondary", { id: s.id });
        revoke.setAttribute("aria-label", "Log out the session " + (s.label || "") +
          " last seen " + when(s.last_seen));
        item.append(revoke);
      }
      return item;
    }));
  }

  async function onSessionClick(event) {
    const revoke = event.target.closest("button.revoke");
    if (!revoke) return;
    await run(async () => {
      await api("DELETE", "/api/account/sessions/" + encodeURIComponent(revoke.dataset.id));
      await Promise.all([loadSessions(), loadEvents(true)]);
      notify("That session is logged out.", false);
    });
    $("revoke-others").focus();
  }

  async function onRevokeOthers() {
    await run(async () => {
      await api("DELETE", "/api/account/sessions");
      await Promise.all([loadSessions(), loadEvents(true)]);
      notify("Every other session is logged out.", false);
    });
  }

  const EVENT_NAMES = {
    login: "Logged in", login_failed: "Failed login or wrong password", logout: "Logged out",
    password_changed: "Password changed", recovery_code_regenerated: "New recovery code",
    recovered: "Password set with the recovery code", session_revoked: "A session logged out",
    sessions_revoked: "Every other session logged out", settings_changed: "Settings changed",
    import: "Conversations imported", export: "History exported",
  };

  async function loadEvents(fresh) {
    const page = await api("GET", withBefore("/api/account/events", EVENTS_PAGE,
      fresh ? null : state.eventsBefore));
    state.eventsBefore = page.next_before;
    const items = page.events.map((e) => {
      const item = element("li", "event");
      item.dataset.type = e.type;
      const name = element("span", "event-type", EVENT_NAMES[e.type] || e.type);
      const time = element("time", "event-time", when(e.at));
      time.dateTime = e.at;
      item.append(name, " · ", time);
      if (e.address) item.append(" · from " + e.address);
      return item;
    });
    if (fresh) $("event-list").replaceChildren(...items);
    else $("event-list").append(...items);
    $("events-more").hidden = !page.next_before;
  }

  async function onEventsMore() {
    await run(() => loadEvents(false));
    if ($("events-more").hidden) $("events-title").focus();
    else $("events-more").focus();
  }

  async function loadSettings() {
    showRetention((await api("GET", "/api/account/settings")).retention_days);
  }

  function showRetention(days) {
    $("retention-forever").checked = days === null;
    $("retention-limited").checked = days !== null;
    if (days !== null) $("retention-days").value = String(days);
    $("retention-days").disabled = days === null;
  }

  function onRetentionChoice() {
    $("retention-days").disabled = $("retention-forever").checked;
  }

  async function onRetention(event) {
    event.preventDefault();
    const limited = $("retention-limited").checked;
    const days = limited ? Number($("retention-days").value) : null;
    if (limited && !(Number.isInteger(days) && days >= 1 && days <= 3650)) {
      notify("Choose a number of days from 1 to 3650.");
      $("retention-days").focus();
      return;
    }
    await run(async () => {
      const saved = await api("PATCH", "/api/account/settings", { retention_days: days });
      showRetention(saved.retention_days);
      await loadEvents(true);
      notify(saved.retention_days === null ? "Conversations are kept forever."
        : "Unstarred conversations are deleted after " + saved.retention_days +
          " days without a new message.", false);
    });
  }

  async function onPasswordChange(event) {
    event.preventDefault();
    const body = { current_password: $("current-password").value, new_password: $("new-password").value };
    let code = null;
    await run(async () => {
      code = (await api("POST", "/api/account/password", body)).recovery_code;
      $("password-form").reset();
      await Promise.all([loadSessions(), loadEvents(true)]);
    });
    $("current-password").value = "";
    if (code) {
      notify("Password changed. Every other session is logged out; this one stays. Your " +
        "recovery code changed too: write down the new one.", false);
      await showCode(code);
      $("password-submit").focus();
    }
  }

  async function onRecoveryCode(event) {
    event.preventDefault();
    let code = null;
    await run(async () => {
      code = (await api("POST", "/api/account/recovery-code", { password: $("recovery-password").value })).recovery_code;
      await loadEvents(true);
    });
    $("recovery-password").value = "";
    if (code) {
      notify("New recovery code made; the previous one no longer works.", false);
      await showCode(code);
      $("recovery-submit").focus();
    }
  }

  async function onDeleteAccount(event) {
    event.preventDefault();
    if ($("delete-confirm").value.trim().toLowerCase() !== String(state.username).toLowerCase()) {
      notify("Type your username exactly to confirm the deletion.");
      $("delete-confirm").focus();
      return;
    }
    let deleted = false;
    await run(async () => {
      await api("DELETE", "/api/account", { password: $("delete-password").value });
      deleted = true;
      showAuth();
    });
    $("delete-password").value = "";
    if (deleted) notify("Your account and everything in it is deleted.", false);
  }

  // --- export and import -------------------------------------------------------------

  function filename(response, fallback) {
    const header = response.headers.get("Content-Disposition") || "";
    const match = /filename\*?=(?:UTF-8'')?"?([^";]+)"?/i.exec(header);
    return match ? decodeURIComponent(match[1]) : fallback;
  }

  // Fetch with the CSRF header (so no other site can start it) and save what comes back.
  async function download(method, path, body, fallback) {
    const response = await request(method, path, body, "*/*");
    if (!response.ok) throw await failure(response);
    const blob = await response.blob();
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = filename(response, fallback);
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    return link.download;
  }

  async function onExport(format) {
    const name = "securechat-export." + (format === "json" ? "json" : "md");
    await run(async () => {
      const saved = await download("GET", "/api/export?format=" + format, undefined, name);
      notify("Downloaded " + saved + ". It is readable plain text: keep it somewhere safe.", false);
    });
  }

  async function onArchive(event) {
    event.preventDefault();
    const passphrase = $("archive-passphrase").value;
    await run(async () => {
      const saved = await download("POST", "/api/export/archive", { passphrase }, "securechat-export.scarchive");
      $("archive-passphrase").value = "";
      notify("Downloaded " + saved + ", encrypted with your passphrase.", false);
    });
  }

  function base64(bytes) {
    let binary = "";
    for (let i = 0; i < bytes.length; i += 0x8000) {
      binary += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    }
    return btoa(binary);
  }

  // A plain export is sent as it is; anything else is taken for an encrypted archive and
  // sent as {"archive": base64 of the file, "passphrase"}.
  async function importBody(file, passphrase) {
    const bytes = new Uint8Array(await file.arrayBuffer());
    let parsed = null;
    try {
      parsed = JSON.parse(new TextDecoder("utf-8", { fatal: true }).decode(bytes));
    } catch (_) {
      parsed = null;
    }
    if (parsed && typeof parsed === "object" && parsed.format === "securechat-export") return parsed;
    if (!passphrase) {
      throw new ApiError(400, "passphrase_needed", "That file is not a plain securechat " +
        "export; if it is an encrypted archive, type its passphrase.");
    }
    return { archive: base64(bytes), passphrase };
  }

  async function onImport(event) {
    event.preventDefault();
    const file = $("import-file").files[0];
    if (!file) return;
    await run(async () => {
      const body = await importBody(file, $("import-passphrase").value);
      const result = await api("POST", "/api/import", body);
      $("import-form").reset();
      await loadConversations(state.current);
      await loadEvents(true);
      notify("Imported " + result.imported + " conversation" + (result.imported === 1 ? "" : "s") +
        " (" + result.messages + " messages).", false);
    });
  }

  async function start() {
    $("auth-form").addEventListener("submit", onAuthSubmit);
    $("forgot").addEventListener("click", onForgot);
    $("recover-form").addEventListener("submit", onRecover);
    $("recover-cancel").addEventListener("click", () => { showRecover(false); $("forgot").focus(); });
    $("composer").addEventListener("submit", onSend);
    $("input").addEventListener("keydown", onKeydown);
    document.addEventListener("keydown", onDocumentKeydown);
    $("stop").addEventListener("click", onStop);
    $("edit-cancel").addEventListener("click", onEditCancel);
    $("conversation-list").addEventListener("click", onPick);
    $("conversations-more").addEventListener("click", onMoreConversations);
    $("new-conversation").addEventListener("click", onNew);
    $("ghost-toggle").addEventListener("change", onGhostToggle);
    $("delete-conversation").addEventListener("click", onDelete);
    $("star").addEventListener("click", onStar);
    $("rename").addEventListener("click", () => showRename(true));
    $("rename-form").addEventListener("submit", onRename);
    $("rename-input").addEventListener("keydown", onRenameKeydown);
    $("rename-cancel").addEventListener("click", () => { showRename(false); $("rename").focus(); });
    $("logout").addEventListener("click", onLogout);
    $("retry").addEventListener("click", onRetry);
    $("messages").addEventListener("click", onListClick);
    $("search-form").addEventListener("submit", onSearch);
    $("search-results").addEventListener("click", onSearchPick);
    $("search-more").addEventListener("click", onSearchMore);
    $("search-clear").addEventListener("click", onSearchClear);
    $("account-toggle").addEventListener("click", onAccountToggle);
    $("account-close").addEventListener("click", () => { closeAccount(); $("account-toggle").focus(); });
    $("password-form").addEventListener("submit", onPasswordChange);
    $("recovery-form").addEventListener("submit", onRecoveryCode);
    $("session-list").addEventListener("click", onSessionClick);
    $("revoke-others").addEventListener("click", onRevokeOthers);
    $("events-more").addEventListener("click", onEventsMore);
    $("retention-form").addEventListener("submit", onRetention);
    $("retention-forever").addEventListener("change", onRetentionChoice);
    $("retention-limited").addEventListener("change", onRetentionChoice);
    $("export-json").addEventListener("click", () => onExport("json"));
    $("export-markdown").addEventListener("click", () => onExport("markdown"));
    $("archive-form").addEventListener("submit", onArchive);
    $("import-form").addEventListener("submit", onImport);
    $("delete-form").addEventListener("submit", onDeleteAccount);
    $("code-copy").addEventListener("click", onCodeCopy);
    $("code-saved").addEventListener("change", () => { $("code-done").disabled = !$("code-saved").checked; });
    $("code-done").addEventListener("click", () => $("code-dialog").close());
    // Esc must not skip the "written down" step.
    $("code-dialog").addEventListener("cancel", (event) => {
      if (!$("code-saved").checked) event.preventDefault();
    });
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
