:; exec "${KERASUI_PYTHON:-python3}" "$(dirname "$0")/kerasui/bootstrap.py" "$@"
@echo off
rem One command for KerasUI on Windows (cmd) and, through the line above, on Linux and macOS (sh).
rem   standalone.bat        install, set up and serve on http://127.0.0.1:8000/
rem   standalone.bat demo   the same, with the demo dataset
rem   standalone.bat test   run the test suite
if defined KERASUI_PYTHON (set "KERASUI_PY=%KERASUI_PYTHON%") else (set "KERASUI_PY=python")
"%KERASUI_PY%" "%~dp0kerasui\bootstrap.py" %*
exit /b %ERRORLEVEL%
