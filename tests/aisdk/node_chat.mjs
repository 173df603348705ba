// The AI SDK's chat client (`AbstractChat`, the class behind `useChat`) with the minimal in-memory
// ChatState the SDK's framework bindings provide (React/Vue/Svelte keep it reactive), shared by the
// harness scripts so every one of them drives the same client.

import { AbstractChat } from 'ai';

class MemoryChatState {
  constructor() {
    this.status = 'ready';
    this.error = undefined;
    this.messages = [];
  }
  pushMessage = (message) => { this.messages = this.messages.concat(message); };
  popMessage = () => { this.messages = this.messages.slice(0, -1); };
  replaceMessage = (index, message) => {
    this.messages = [...this.messages.slice(0, index), message, ...this.messages.slice(index + 1)];
  };
  snapshot = (thing) => structuredClone(thing);
}

export class NodeChat extends AbstractChat {
  constructor(init) {
    super({ ...init, state: new MemoryChatState() });
  }
  get snapshotState() {
    return this.state;
  }
}
