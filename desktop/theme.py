"""Light and dark themes: colours, the application style sheet, icons and code-highlighting formats.

One :class:`Theme` value describes the current look. :class:`ThemeManager` picks it from the user's setting
(system/light/dark), follows the system colour scheme when asked to, applies the palette + style sheet to the
application and emits ``changed`` so widgets that paint or render HTML themselves can refresh.
"""

from __future__ import annotations

import logging
import string
import sys
from dataclasses import dataclass
from functools import cache, lru_cache

from PySide6.QtCore import QByteArray, QObject, QRectF, QSize, Qt, Signal
from PySide6.QtGui import (
    QColor,
    QFont,
    QFontDatabase,
    QGuiApplication,
    QIcon,
    QImage,
    QPainter,
    QPalette,
    QPixmap,
)
from PySide6.QtSvg import QSvgRenderer
from PySide6.QtWidgets import QApplication

from desktop.paths import resources_dir

log = logging.getLogger(__name__)

LIGHT: dict[str, str] = {
    "bg": "#FFFFFF",
    "sidebar": "#F4F4F6",
    "sidebar_hover": "#E8E8ED",
    "sidebar_selected": "#DFE0E6",
    "border": "#E3E3E8",
    "border_strong": "#D2D2D9",
    "text": "#1D1D1F",
    "muted": "#6E6E76",
    "faint": "#A3A3AB",
    "accent": "#0E8C85",
    "accent_hover": "#0B746F",
    "accent_text": "#FFFFFF",
    "accent_soft": "#E1F2F0",
    "accent_soft_border": "#CBE7E3",
    "bubble_text": "#1D1D1F",
    "code_bg": "#F6F7F9",
    "code_header": "#EEF0F3",
    "code_border": "#E4E6EA",
    "inline_code_bg": "#EEF0F3",
    "link": "#0A7D95",
    "warning": "#B86E00",
    "warning_soft": "#FFF4E0",
    "danger": "#CC3A3A",
    "danger_soft": "#FDECEC",
    "success": "#1E9257",
    "input_bg": "#FFFFFF",
    "field_bg": "#EDEDF1",
    "card": "#FFFFFF",
    "dialog_bg": "#F7F7F9",
    "toast_bg": "#2B2B2F",
    "toast_text": "#FFFFFF",
    "selection": "#BFE4E0",
    "scroll_handle": "#C9C9CF",
}

DARK: dict[str, str] = {
    "bg": "#1E1E20",
    "sidebar": "#161618",
    "sidebar_hover": "#242428",
    "sidebar_selected": "#2E2E34",
    "border": "#2E2E33",
    "border_strong": "#3C3C42",
    "text": "#ECECEF",
    "muted": "#A0A0A9",
    "faint": "#6C6C75",
    "accent": "#2BBFB3",
    "accent_hover": "#45D3C7",
    "accent_text": "#0B1C1B",
    "accent_soft": "#213B39",
    "accent_soft_border": "#2A4C49",
    "bubble_text": "#ECECEF",
    "code_bg": "#151517",
    "code_header": "#202024",
    "code_border": "#2E2E33",
    "inline_code_bg": "#2C2C31",
    "link": "#5DC9E2",
    "warning": "#F0A43A",
    "warning_soft": "#3A2E1A",
    "danger": "#F06A6A",
    "danger_soft": "#3D2223",
    "success": "#4CC38A",
    "input_bg": "#26262A",
    "field_bg": "#2A2A2F",
    "card": "#26262A",
    "dialog_bg": "#1E1E20",
    "toast_bg": "#ECECEF",
    "toast_text": "#1D1D1F",
    "selection": "#2D5753",
    "scroll_handle": "#4A4A52",
}

# Pygments styles whose colours read well on the code panel of each theme.
PYGMENTS_STYLE = {False: "xcode", True: "github-dark"}

UI_FONT_CANDIDATES = [
    "Inter",
    "SF Pro Text",
    "Helvetica Neue",
    "Segoe UI",
    "Cantarell",
    "Noto Sans",
    "Nimbus Sans",
    "Liberation Sans",
    "DejaVu Sans",
]
MONO_FONT_CANDIDATES = [
    "SF Mono",
    "Menlo",
    "JetBrains Mono",
    "Cascadia Mono",
    "Consolas",
    "DejaVu Sans Mono",
    "Noto Sans Mono",
]

BODY_PX = 14  # chat text
UI_PX = 13  # controls
SMALL_PX = 12
CODE_PX = 13


@dataclass(frozen=True)
class Theme:
    """The resolved look: ``dark`` plus the colour table."""

    dark: bool
    colors: dict[str, str]

    def __getitem__(self, key: str) -> str:
        return self.colors[key]

    def qcolor(self, key: str) -> QColor:
        return QColor(self.colors[key])

    @property
    def name(self) -> str:
        return "dark" if self.dark else "light"

    @property
    def pygments_style(self) -> str:
        return PYGMENTS_STYLE[self.dark]


def make_theme(dark: bool) -> Theme:
    return Theme(dark=dark, colors=dict(DARK if dark else LIGHT))


_current: Theme = make_theme(False)


def current() -> Theme:
    """The theme in effect; widgets call this when they (re)render."""
    return _current


def _installed(name: str) -> bool:
    """Whether a family is installed; fontconfig may list it with a foundry suffix ("Nimbus Sans [urw]")."""
    return any(f == name or f.startswith(name + " [") for f in QFontDatabase.families())


@lru_cache(maxsize=1)
def ui_font_family() -> str:
    """The UI font: the platform default on macOS (SF Pro), else the first nice family installed."""
    default = QFont().defaultFamily() if sys.platform == "darwin" else ""
    if default:
        return QGuiApplication.font().family()
    for name in UI_FONT_CANDIDATES:
        if _installed(name):
            return name
    return QGuiApplication.font().family()


@lru_cache(maxsize=1)
def mono_font_family() -> str:
    for name in MONO_FONT_CANDIDATES:
        if _installed(name):
            return name
    return QFontDatabase.systemFont(QFontDatabase.SystemFont.FixedFont).family()


def ui_font(px: int = UI_PX, weight: QFont.Weight = QFont.Weight.Normal) -> QFont:
    font = QFont(ui_font_family())
    font.setPixelSize(px)
    font.setWeight(weight)
    return font


def mono_font(px: int = CODE_PX) -> QFont:
    font = QFont(mono_font_family())
    font.setStyleHint(QFont.StyleHint.Monospace)
    font.setPixelSize(px)
    return font


def style_sheet(theme: Theme) -> str:
    """The application style sheet: ``resources/style.qss`` with ``$colour`` names filled in."""
    template = string.Template((resources_dir() / "style.qss").read_text(encoding="utf-8"))
    values = dict(theme.colors)
    values.update(
        icons_dir=(resources_dir() / "icons").as_posix(),
        theme_name=theme.name,  # e.g. chevron-down-$theme_name.svg: an icon drawn in this theme's colour
        ui_font=ui_font_family(),
        mono_font=mono_font_family(),
        ui_px=str(UI_PX),
        body_px=str(BODY_PX),
        small_px=str(SMALL_PX),
        code_px=str(CODE_PX),
    )
    return template.substitute(values)


def palette(theme: Theme) -> QPalette:
    """A QPalette matching the theme, so unstyled parts (menus, dialogs, text cursors) agree with the QSS."""
    c = theme.qcolor
    pal = QPalette()
    roles = {
        QPalette.ColorRole.Window: c("dialog_bg"),
        QPalette.ColorRole.WindowText: c("text"),
        QPalette.ColorRole.Base: c("input_bg"),
        QPalette.ColorRole.AlternateBase: c("sidebar"),
        QPalette.ColorRole.Text: c("text"),
        QPalette.ColorRole.Button: c("card"),
        QPalette.ColorRole.ButtonText: c("text"),
        QPalette.ColorRole.Highlight: c("selection"),
        QPalette.ColorRole.HighlightedText: c("text"),
        QPalette.ColorRole.ToolTipBase: c("card"),
        QPalette.ColorRole.ToolTipText: c("text"),
        QPalette.ColorRole.PlaceholderText: c("faint"),
        QPalette.ColorRole.Link: c("link"),
        QPalette.ColorRole.BrightText: c("danger"),
        QPalette.ColorRole.Mid: c("border_strong"),
        QPalette.ColorRole.Midlight: c("border"),
        QPalette.ColorRole.Dark: c("border_strong"),
        QPalette.ColorRole.Light: c("card"),
        QPalette.ColorRole.Shadow: QColor(0, 0, 0, 80),
    }
    for role, color in roles.items():
        pal.setColor(role, color)
    for role in (QPalette.ColorRole.Text, QPalette.ColorRole.WindowText, QPalette.ColorRole.ButtonText):
        pal.setColor(QPalette.ColorGroup.Disabled, role, c("faint"))
    return pal


# ---------------------------------------------------------------------------------------------------------- icons


@cache
def _svg_source(name: str) -> str:
    return (resources_dir() / "icons" / f"{name}.svg").read_text(encoding="utf-8")


def _render_svg(svg: str, size: int, ratio: float) -> QPixmap:
    renderer = QSvgRenderer(QByteArray(svg.encode("utf-8")))
    image = QImage(int(size * ratio), int(size * ratio), QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    renderer.render(painter, QRectF(0, 0, image.width(), image.height()))
    painter.end()
    pixmap = QPixmap.fromImage(image)
    pixmap.setDevicePixelRatio(ratio)
    return pixmap


_icon_cache: dict[tuple[str, str, str], QIcon] = {}


def icon(name: str, color: str = "muted", disabled: str = "faint") -> QIcon:
    """A themed icon from ``resources/icons/<name>.svg``; ``color`` is a theme colour name or ``#rrggbb``."""
    theme = current()
    normal = theme.colors.get(color, color)
    off = theme.colors.get(disabled, disabled)
    key = (name, normal, off)
    cached = _icon_cache.get(key)
    if cached is not None:
        return cached
    source = _svg_source(name)
    result = QIcon()
    for size in (16, 20, 24, 32):
        for ratio in (1.0, 2.0):
            result.addPixmap(_render_svg(source.replace("currentColor", normal), size, ratio), QIcon.Mode.Normal)
            result.addPixmap(_render_svg(source.replace("currentColor", off), size, ratio), QIcon.Mode.Disabled)
    _icon_cache[key] = result
    return result


def pixmap(name: str, size: int, color: str = "muted", ratio: float = 2.0) -> QPixmap:
    theme = current()
    return _render_svg(_svg_source(name).replace("currentColor", theme.colors.get(color, color)), size, ratio)


def render_app_icon(size: int = 1024) -> QImage:
    """Rasterise ``resources/icons/app-icon.svg`` (the .app icon source; also the window icon)."""
    renderer = QSvgRenderer(str(resources_dir() / "icons" / "app-icon.svg"))
    image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
    renderer.render(painter, QRectF(0, 0, size, size))
    painter.end()
    return image


def app_icon() -> QIcon:
    png = resources_dir() / "icons" / "app-icon-1024.png"
    if png.exists():
        return QIcon(str(png))
    result = QIcon()
    for size in (16, 32, 64, 128, 256, 512):
        result.addPixmap(QPixmap.fromImage(render_app_icon(size)))
    return result


# ------------------------------------------------------------------------------------------------ theme manager


def system_prefers_dark() -> bool:
    hints = QGuiApplication.styleHints()
    scheme = hints.colorScheme()
    if scheme == Qt.ColorScheme.Dark:
        return True
    if scheme == Qt.ColorScheme.Light:
        return False
    # Unknown (e.g. offscreen): judge by the platform palette's window colour.
    return QGuiApplication.palette().color(QPalette.ColorRole.Window).lightness() < 128


class ThemeManager(QObject):
    """Applies the chosen theme to the application and follows the system scheme in "system" mode.

    Signals:
        changed(Theme): emitted after the palette and style sheet were replaced.
    """

    changed = Signal(object)

    def __init__(self, app: QApplication, mode: str = "system") -> None:
        super().__init__(app)
        self._app = app
        self._mode = mode
        # Fusion everywhere: the style sheet is written against it, and it is what CI screenshots show.
        app.setStyle("Fusion")
        app.styleHints().colorSchemeChanged.connect(self._on_system_scheme_changed)
        self.apply()

    @property
    def mode(self) -> str:
        return self._mode

    def set_mode(self, mode: str) -> None:
        if mode not in ("system", "light", "dark"):
            raise ValueError(f"theme must be system, light or dark, not {mode!r}")
        self._mode = mode
        self.apply()

    def resolve_dark(self) -> bool:
        if self._mode == "dark":
            return True
        if self._mode == "light":
            return False
        return system_prefers_dark()

    def apply(self) -> Theme:
        global _current
        theme = make_theme(self.resolve_dark())
        _current = theme
        _icon_cache.clear()
        font = ui_font(UI_PX)
        self._app.setFont(font)
        self._app.setPalette(palette(theme))
        self._app.setStyleSheet(style_sheet(theme))
        self.changed.emit(theme)
        return theme

    def _on_system_scheme_changed(self, _scheme: Qt.ColorScheme) -> None:
        if self._mode == "system":
            self.apply()


def icon_size(px: int) -> QSize:
    return QSize(px, px)
