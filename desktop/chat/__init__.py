"""The conversation column and its message widgets.

- :mod:`desktop.chat.view`: :class:`ChatView`, the scrolling column (building, streaming, scrolling).
- :mod:`desktop.chat.user_message` and :mod:`desktop.chat.assistant_message`: the two kinds of message.
- :mod:`desktop.chat.reasoning`: a Think model's reasoning block; :mod:`desktop.chat.branch_switcher`: ‹ 2 / 3 ›.
- :mod:`desktop.chat.message`: what every message widget shares (hover actions, tool buttons).
"""

from desktop.chat.assistant_message import AssistantMessageWidget, TypingIndicator
from desktop.chat.branch_switcher import BranchSwitcher
from desktop.chat.message import MessageWidget
from desktop.chat.reasoning import ReasoningBlock
from desktop.chat.user_message import UserMessageWidget
from desktop.chat.view import COLUMN_MAX, COLUMN_PAD, ChatView, EmptyConversation, NewTextPill

__all__ = [
    "COLUMN_MAX",
    "COLUMN_PAD",
    "AssistantMessageWidget",
    "BranchSwitcher",
    "ChatView",
    "EmptyConversation",
    "MessageWidget",
    "NewTextPill",
    "ReasoningBlock",
    "TypingIndicator",
    "UserMessageWidget",
]
